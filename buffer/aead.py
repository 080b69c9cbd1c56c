"""Record encryption: AEAD with associated data binding every clear column of the row.

A sealed payload is ``nonce (12 random bytes) || ciphertext || tag (16 bytes)``. The associated
data binds the record id, stream, route, priority, creation time, key epoch and the form of
the plaintext (body, or wire form), so that a row whose ciphertext is altered, swapped with
another row's, or moved to another stream, route, epoch or form fails authentication.
"""

from __future__ import annotations

import os

import msgspec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from heatgate.buffer.errors import UnknownCipher

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


class RecordCipher:
    """One data key's AEAD object, created once and reused for every record of its epoch."""

    __slots__ = ("_aead", "name")

    def __init__(self, name: str, key: bytes) -> None:
        self.name = check_cipher(name)
        self._aead: ChaCha20Poly1305 | AESGCM = ChaCha20Poly1305(key) if name == "chacha20-poly1305" else AESGCM(key)

    def seal(self, plaintext: bytes, associated: bytes) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, sealed: bytes, associated: bytes) -> bytes:
        """Raises ``cryptography.exceptions.InvalidTag`` when authentication fails."""
        return self._aead.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], associated)
