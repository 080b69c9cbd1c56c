"""Reading the PEM public-key files the daemon pins: Ed25519 and X25519 SubjectPublicKeyInfo.

Such a key's DER is always 44 bytes: a fixed 12-byte prefix naming the algorithm (RFC 8410)
and the 32 raw key bytes. So the parser is strict and small: one ``PUBLIC KEY`` block (CRLF line
ends and surrounding blank space allowed, nothing else around it), base64 that decodes cleanly,
exactly 44 bytes, exactly the algorithm's prefix. ``cryptography`` writes keys in this form
(``heatgate keys``, ``heatgate provision``); :func:`public_key_pem` writes the same bytes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Final, Literal

from heatgate.errors import HeatgateError

__all__ = ["PublicKeyAlgorithm", "PublicKeyPemError", "public_key_pem", "raw_public_key"]

PublicKeyAlgorithm = Literal["Ed25519", "X25519"]

_BEGIN: Final = "-----BEGIN PUBLIC KEY-----"
_END: Final = "-----END PUBLIC KEY-----"
_RAW_BYTES: Final = 32
# SEQUENCE(42) { SEQUENCE(5) { OID 1.3.101.112 | 1.3.101.110 }, BIT STRING(33) { 0 unused bits, key } }
_DER_PREFIX: Final[dict[PublicKeyAlgorithm, bytes]] = {
    "Ed25519": bytes.fromhex("302a300506032b6570032100"),
    "X25519": bytes.fromhex("302a300506032b656e032100"),
}
_DER_BYTES: Final = 12 + _RAW_BYTES


class PublicKeyPemError(HeatgateError, ValueError):
    """Not a PEM public key of the expected algorithm; ``reason`` says what is wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def raw_public_key(pem: bytes, algorithm: PublicKeyAlgorithm) -> bytes:
    """The 32 raw bytes of the ``algorithm`` public key in ``pem``; raises :class:`PublicKeyPemError`."""
    der = _der(pem)
    if len(der) != _DER_BYTES:
        raise PublicKeyPemError(f"not an {algorithm} public key ({len(der)} bytes of DER, expected {_DER_BYTES})")
    prefix = der[:-_RAW_BYTES]
    if prefix != _DER_PREFIX[algorithm]:
        other = next((name for name, known in _DER_PREFIX.items() if known == prefix), None)
        kind = f"an {other} public key" if other else "a public key of another algorithm"
        raise PublicKeyPemError(f"not an {algorithm} public key (it is {kind})")
    return der[-_RAW_BYTES:]


def public_key_pem(raw: bytes, algorithm: PublicKeyAlgorithm) -> bytes:
    """The PEM SubjectPublicKeyInfo of a raw 32-byte key, as ``cryptography`` writes it."""
    if len(raw) != _RAW_BYTES:
        raise ValueError(f"an {algorithm} public key is {_RAW_BYTES} bytes, not {len(raw)}")
    body = base64.b64encode(_DER_PREFIX[algorithm] + raw).decode("ascii")
    return f"{_BEGIN}\n{body}\n{_END}\n".encode("ascii")


def _der(pem: bytes) -> bytes:
    try:
        text = pem.decode("ascii")
    except UnicodeDecodeError:
        raise PublicKeyPemError("not a PEM public key (not ASCII text)") from None
    lines = [line.strip() for line in text.strip().splitlines()]
    if not lines or lines[0] != _BEGIN:
        found = lines[0][:40] if lines and lines[0].startswith("-----BEGIN ") else None
        raise PublicKeyPemError(
            f"not a PEM public key (starts with {found!r}, expected {_BEGIN!r})"
            if found
            else f"not a PEM public key (no {_BEGIN!r} line first)"
        )
    if lines[-1] != _END or len(lines) < 3:
        raise PublicKeyPemError(f"not a PEM public key (no {_END!r} line last)")
    try:
        return base64.b64decode("".join(lines[1:-1]), validate=True)
    except (binascii.Error, ValueError):
        raise PublicKeyPemError("not a PEM public key (its body is not base64)") from None
