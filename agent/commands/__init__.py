"""Signed, replay-proof remote commands.

- :mod:`agent.commands.envelope`: the wire envelope and its canonical signing bytes;
- :mod:`agent.commands.keys`: Ed25519 / X25519 public key files and key ids (what the daemon reads);
- :mod:`agent.commands.private_keys`: generating key pairs, reading private keys (CLI side);
- :mod:`agent.commands.catalog`: the commands and their argument types;
- :mod:`agent.commands.verify`: :class:`CommandVerifier` (raw bytes -> ``Verified | Refusal``);
- :mod:`agent.commands.nonces`: :class:`NonceStore`, remembered across restarts until expiry;
- :mod:`agent.commands.dispatch`: :class:`CommandProcessor` (verify, audit, run, answer);
- :mod:`agent.commands.seal`: sealed boxes for ``privacy.export`` results;
- :mod:`agent.commands.reasons`: the stable reason codes.
"""
