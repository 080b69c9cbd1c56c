"""Key files of the command layer and their ids: what the daemon reads (public keys only).

Command and approval keys are Ed25519; export recipients are X25519. Public keys are
SubjectPublicKeyInfo PEM (read by :mod:`heatgate.public_key_pem`, into :mod:`heatgate.sodium`
keys), private keys PKCS#8 PEM (unencrypted, mode 0600; generated and read on the CLI side,
:mod:`heatgate.agent.commands.private_keys`, with ``cryptography``). A key id is the first 16 hex
digits of SHA-256 of the raw 32-byte public key, for both kinds.

Nothing here imports ``cryptography``: the daemon pins keys and verifies without it (issue 20).
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Literal, Protocol

from heatgate.agent.commands.errors import CommandError
from heatgate.public_key_pem import PublicKeyAlgorithm, PublicKeyPemError, raw_public_key
from heatgate.sodium import Ed25519PublicKey, X25519PublicKey

__all__ = [
    "KEY_NAMES",
    "CommandKeyFileError",
    "KeyName",
    "RawPrivateKey",
    "RawPublicKey",
    "key_id",
    "load_ed25519_public",
    "load_x25519_public",
    "raw_public",
    "read_key_file",
]

KeyName = Literal["command", "approval", "recipient"]
KEY_NAMES: tuple[KeyName, ...] = ("command", "approval", "recipient")


class RawPublicKey(Protocol):
    """A public key that gives its 32 raw bytes: :mod:`heatgate.sodium`'s or ``cryptography``'s."""

    def public_bytes_raw(self) -> bytes: ...


class RawPrivateKey(Protocol):
    """A private key that gives its 32 raw bytes: :mod:`heatgate.sodium`'s or ``cryptography``'s."""

    def private_bytes_raw(self) -> bytes: ...


class CommandKeyFileError(CommandError):
    """A command, approval or recipient key file is missing, unreadable or of the wrong kind."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason


def raw_public(key: RawPublicKey) -> bytes:
    return key.public_bytes_raw()


def key_id(key: RawPublicKey) -> str:
    """First 16 hex digits of SHA-256 of the raw public key."""
    return hashlib.sha256(raw_public(key)).hexdigest()[:16]


def read_key_file(path: Path) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandKeyFileError(Path(path), exc.strerror or str(exc)) from None


def _load_public(path: Path, algorithm: PublicKeyAlgorithm) -> bytes:
    try:
        return raw_public_key(read_key_file(path), algorithm)
    except PublicKeyPemError as exc:
        raise CommandKeyFileError(Path(path), exc.reason) from None


def load_ed25519_public(path: Path) -> Ed25519PublicKey:
    return Ed25519PublicKey(_load_public(path, "Ed25519"))


def load_x25519_public(path: Path) -> X25519PublicKey:
    return X25519PublicKey(_load_public(path, "X25519"))
