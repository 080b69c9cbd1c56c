"""Sealed boxes: data only the holder of an X25519 private key can open.

``seal(recipient_public, data)``: a fresh ephemeral X25519 key pair; the shared secret with the
recipient goes through HKDF-SHA256 (salt = ephemeral public || recipient public, info =
``heatgate-sealed/v1``) into a 32-byte ChaCha20-Poly1305 key and a 12-byte nonce. The blob is::

    b"HGS1" || ephemeral public (32 bytes) || ciphertext+tag

and the header (magic and ephemeral public key) is the AEAD's associated data. The sender keeps
nothing that can open it.
"""

from __future__ import annotations

from typing import Final

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from heatgate.agent.commands.errors import CommandError
from heatgate.agent.commands.keys import raw_public

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
    okm = HKDF(algorithm=hashes.SHA256(), length=44, salt=ephemeral + recipient, info=INFO).derive(shared)
    return okm[:32], okm[32:]


def seal(recipient: X25519PublicKey, data: bytes) -> bytes:
    ephemeral_private = X25519PrivateKey.generate()
    ephemeral = raw_public(ephemeral_private.public_key())
    key, nonce = _derive(ephemeral_private.exchange(recipient), ephemeral, raw_public(recipient))
    header = MAGIC + ephemeral
    return header + ChaCha20Poly1305(key).encrypt(nonce, data, header)


def open_sealed(private: X25519PrivateKey, blob: bytes) -> bytes:
    """Decrypt; raises :class:`SealError` for a wrong key, a truncated or altered blob."""
    if len(blob) < _HEADER_BYTES + _TAG_BYTES or not blob.startswith(MAGIC):
        raise SealError("not a heatgate sealed box")
    header = blob[:_HEADER_BYTES]
    ephemeral = header[len(MAGIC) :]
    try:
        shared = private.exchange(X25519PublicKey.from_public_bytes(ephemeral))
    except ValueError:
        raise SealError("bad ephemeral key") from None
    key, nonce = _derive(shared, ephemeral, raw_public(private.public_key()))
    try:
        return ChaCha20Poly1305(key).decrypt(nonce, blob[_HEADER_BYTES:], header)
    except InvalidTag:
        raise SealError("wrong key or altered data") from None
