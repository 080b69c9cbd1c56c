"""Private key files of the command layer (CLI side: ``heatgate keys``, ``heatgate cmd``, tests).

Generating key pairs and reading PKCS#8 private keys uses ``cryptography``, which the daemon
never imports (see :mod:`heatgate.agent.commands.keys` for the public side it does read).
"""

from __future__ import annotations

import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from heatgate.agent.commands.keys import CommandKeyFileError, KeyName, key_id, read_key_file

__all__ = ["generate_key_pair", "load_ed25519_private", "load_x25519_private"]


def _load_private(path: Path) -> object:
    try:
        return serialization.load_pem_private_key(read_key_file(path), password=None)
    except (ValueError, TypeError) as exc:
        raise CommandKeyFileError(Path(path), f"not an unencrypted PEM private key ({exc})") from None


def load_ed25519_private(path: Path) -> Ed25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise CommandKeyFileError(Path(path), "not an Ed25519 private key")
    return key


def load_x25519_private(path: Path) -> X25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, X25519PrivateKey):
        raise CommandKeyFileError(Path(path), "not an X25519 private key")
    return key


def generate_key_pair(directory: Path, name: KeyName, *, overwrite: bool = False) -> tuple[Path, Path, str]:
    """Write ``<name>.key`` (0600) and ``<name>.pub`` into ``directory``; returns both paths and the
    key id. ``recipient`` is X25519, the others Ed25519. Refuses to overwrite unless asked."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    private_path, public_path = directory / f"{name}.key", directory / f"{name}.pub"
    if not overwrite:
        for path in (private_path, public_path):
            if path.exists():
                raise CommandKeyFileError(path, "exists (use --force to replace it)")
    private: Ed25519PrivateKey | X25519PrivateKey = (
        X25519PrivateKey.generate() if name == "recipient" else Ed25519PrivateKey.generate()
    )
    pem = private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    fd = os.open(private_path, flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
        os.write(fd, pem)
    finally:
        os.close(fd)
    public = private.public_key()
    public_path.write_bytes(
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    public_path.chmod(0o644)
    return private_path, public_path, key_id(public)
