"""Record encryption: AEAD with associated data binding every clear column of the row.

A sealed payload is ``nonce (12 random bytes) || ciphertext || tag (16 bytes)``. The associated
data binds the record id, stream, route, priority, creation time, key epoch and the form of
the plaintext (body, or wire form), so that a row whose ciphertext is altered, swapped with
another row's, or moved to another stream, route, epoch or form fails authentication.

The default ``chacha20-poly1305`` runs on libsodium (:mod:`heatgate.sodium`). ``aes-256-gcm``
uses ``cryptography``'s AESGCM, imported only when a data key of that cipher is first used:
libsodium offers AES-GCM only on CPUs with AES instructions (not a Raspberry Pi 4), and
``cryptography`` costs the daemon about 8.6 MiB of RSS (see docs/buffer.md).
"""

from __future__ import annotations

import os
from typing import Protocol

import msgspec

from heatgate.buffer.errors import UnknownCipher
from heatgate.sodium import AuthenticationFailed, ChaCha20Poly1305

__all__ = ["CIPHERS", "DEFAULT_CIPHER", "NONCE_BYTES", "RecordCipher", "associated_data", "check_cipher"]

DEFAULT_CIPHER = "chacha20-poly1305"
CIPHERS = ("chacha20-poly1305", "aes-256-gcm")
NONCE_BYTES = 12
_AD_VERSION = 1
_encode = msgspec.msgpack.Encoder().encode


def check_cipher(name: str) -> str:
    if name not in CIPHERS:
        raise UnknownCipher(name)
    return name


def associated_data(
    record_id: str, stream: str, route: str, priority: int, created_s: float, epoch: int, form: int = 0
) -> bytes:
    """Unambiguous encoding (msgpack array) of the clear columns a ciphertext is bound to.
    ``form`` (what the plaintext is, see :mod:`heatgate.buffer.schema`): 0 encodes exactly as
    before the column existed (rows of older versions still open); any other form is appended,
    so that a row's form cannot be changed without failing authentication."""
    # float(): SQLite's REAL column gives back a float even for an int, which encodes differently.
    if form == 0:
        return _encode((_AD_VERSION, record_id, stream, route, priority, float(created_s), epoch))
    return _encode((_AD_VERSION, record_id, stream, route, priority, float(created_s), epoch, form))


class Aead(Protocol):
    def encrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes: ...

    def decrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes: ...


class _AesGcm:
    """``cryptography``'s AES-256-GCM (imported on first use), its ``InvalidTag`` raised as
    :class:`AuthenticationFailed`."""

    __slots__ = ("_aead", "_invalid_tag")

    def __init__(self, key: bytes) -> None:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self._aead = AESGCM(key)
        self._invalid_tag = InvalidTag

    def encrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        return self._aead.encrypt(nonce, data, associated)

    def decrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        try:
            return self._aead.decrypt(nonce, data, associated)
        except self._invalid_tag:
            raise AuthenticationFailed("ciphertext did not authenticate") from None


class RecordCipher:
    """One data key's AEAD object, created once and reused for every record of its epoch."""

    __slots__ = ("_aead", "name")

    def __init__(self, name: str, key: bytes) -> None:
        self.name = check_cipher(name)
        self._aead: Aead = ChaCha20Poly1305(key) if name == "chacha20-poly1305" else _AesGcm(key)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """Raises :class:`heatgate.sodium.AuthenticationFailed` when authentication fails."""
        return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
