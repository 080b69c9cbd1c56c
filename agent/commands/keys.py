"""Key files of the command layer and their ids.

Command and approval keys are Ed25519; export recipients are X25519. Private keys are
PKCS#8 PEM (unencrypted, mode 0600), public keys SubjectPublicKeyInfo PEM. A key id is the first
16 hex digits of SHA-256 of the raw 32-byte public key, for both kinds.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from heatgate.agent.commands.errors import CommandError

__all__ = [
    "CommandKeyFileError",
    "KeyName",
    "generate_key_pair",
    "key_id",
    "load_ed25519_private",
    "load_ed25519_public",
    "load_x25519_private",
    "load_x25519_public",
    "raw_public",
]

KeyName = Literal["command", "approval", "recipient"]
KEY_NAMES: tuple[KeyName, ...] = ("command", "approval", "recipient")


class CommandKeyFileError(CommandError):
    """A command, approval or recipient key file is missing, unreadable or of the wrong kind."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey | X25519PublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def _read(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandKeyFileError(Path(path), exc.strerror or str(exc)) from None


def _load_private(path: Path) -> object:
    try:
        return serialization.load_pem_private_key(_read(path), password=None)
    except (ValueError, TypeError) as exc:
        raise CommandKeyFileError(Path(path), f"not an unencrypted PEM private key ({exc})") from None


def _load_public(path: Path) -> object:
    try:
        return serialization.load_pem_public_key(_read(path))
    except (ValueError, TypeError) as exc:
        raise CommandKeyFileError(Path(path), f"not a PEM public key ({exc})") from None


def load_ed25519_private(path: Path) -> Ed25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, Ed25519PrivateKey):
        raise CommandKeyFileError(Path(path), "not an Ed25519 private key")
    return key


def load_ed25519_public(path: Path) -> Ed25519PublicKey:
    key = _load_public(path)
    if not isinstance(key, Ed25519PublicKey):
        raise CommandKeyFileError(Path(path), "not an Ed25519 public key")
    return key


def load_x25519_private(path: Path) -> X25519PrivateKey:
    key = _load_private(path)
    if not isinstance(key, X25519PrivateKey):
        raise CommandKeyFileError(Path(path), "not an X25519 private key")
    return key


def load_x25519_public(path: Path) -> X25519PublicKey:
    key = _load_public(path)
    if not isinstance(key, X25519PublicKey):
        raise CommandKeyFileError(Path(path), "not an X25519 public key")
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
