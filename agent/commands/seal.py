"""Sealed boxes: data only the holder of an X25519 private key can open.

``seal(recipient_public, data)``: a fresh ephemeral X25519 key pair; the shared secret with the
recipient goes through HKDF-SHA256 (salt = ephemeral public || recipient public, info =
``heatgate-sealed/v1``) into a 32-byte ChaCha20-Poly1305 key and a 12-byte nonce. The blob is::

    b"HGS1" || ephemeral public (32 bytes) || ciphertext+tag

and the header (magic and ephemeral public key) is the AEAD's associated data. The sender keeps
nothing that can open it. On libsodium (:mod:`heatgate.sodium`, :mod:`heatgate.hkdf`): the daemon
seals without ``cryptography``; :func:`open_sealed` takes any X25519 private key that gives its
raw bytes (``cryptography``'s, on the CLI side, or :mod:`heatgate.sodium`'s).
"""

from __future__ import annotations

from typing import Final

from heatgate.agent.commands.errors import CommandError
from heatgate.agent.commands.keys import RawPrivateKey, RawPublicKey, raw_public
from heatgate.hkdf import hkdf_sha256
from heatgate.sodium import AuthenticationFailed, ChaCha20Poly1305, X25519PrivateKey, X25519PublicKey

__all__ = ["SealError", "open_sealed", "seal"]

MAGIC: Final = b"HGS1"
INFO: Final = b"heatgate-sealed/v1"
_HEADER_BYTES: Final = len(MAGIC) + 32
_TAG_BYTES: Final = 16


class SealError(CommandError):
    """The blob is not a sealed box for this key, or it was altered."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _derive(shared: bytes, ephemeral: bytes, recipient: bytes) -> tuple[bytes, bytes]:
    okm = hkdf_sha256(shared, salt=ephemeral + recipient, info=INFO, length_bytes=44)
    return okm[:32], okm[32:]


def seal(recipient: RawPublicKey, data: bytes) -> bytes:
    """Raises ``ValueError`` for a recipient key of low order (no secret to share)."""
    ephemeral_private = X25519PrivateKey.generate()
    ephemeral = raw_public(ephemeral_private.public_key())
    recipient_raw = raw_public(recipient)
    key, nonce = _derive(ephemeral_private.exchange(X25519PublicKey(recipient_raw)), ephemeral, recipient_raw)
    header = MAGIC + ephemeral
    return header + ChaCha20Poly1305(key).encrypt(nonce, data, header)


def open_sealed(private_key: RawPrivateKey, blob: bytes) -> bytes:
    """Decrypt; raises :class:`SealError` for a wrong key, a truncated or altered blob."""
    if len(blob) < _HEADER_BYTES + _TAG_BYTES or not blob.startswith(MAGIC):
        raise SealError("not a heatgate sealed box")
    header = blob[:_HEADER_BYTES]
    ephemeral = header[len(MAGIC) :]
    private = X25519PrivateKey(private_key.private_bytes_raw())
    try:
        shared = private.exchange(X25519PublicKey(ephemeral))
    except ValueError:
        raise SealError("bad ephemeral key") from None
    key, nonce = _derive(shared, ephemeral, raw_public(private.public_key()))
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[_HEADER_BYTES:], header)
    except AuthenticationFailed:
        raise SealError("wrong key or altered data") from None
