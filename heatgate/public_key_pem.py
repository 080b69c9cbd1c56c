"""Reading the PEM public-key files the daemon pins: Ed25519 and X25519 SubjectPublicKeyInfo.

Such a key's DER is always 44 bytes: a fixed 12-byte prefix naming the algorithm (RFC 8410)
and the 32 raw key bytes. So the parser is strict and small: exactly one ``PUBLIC KEY`` block and
no other PEM block (explanatory text around it is ignored, as RFC 7468 and ``cryptography``
allow; CRLF line ends too), base64 that decodes cleanly, exactly 44 bytes, exactly the
algorithm's prefix. ``cryptography`` writes keys in this form
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
    lines = [line.strip() for line in pem.decode("latin-1").splitlines()]  # the body must be base64 anyway
    boundaries = [index for index, line in enumerate(lines) if line.startswith("-----")]
    labels = [lines[index] for index in boundaries]
    if labels != [_BEGIN, _END]:
        other = next((label for label in labels if label.startswith("-----BEGIN ") and label != _BEGIN), None)
        if other is not None:
            raise PublicKeyPemError(f"not a PEM public key (holds {other[:40]!r}, expected only {_BEGIN!r})")
        raise PublicKeyPemError(f"not a PEM public key (expected one {_BEGIN!r} ... {_END!r} block)")
    body = "".join(lines[boundaries[0] + 1 : boundaries[1]])
    if not body:
        raise PublicKeyPemError("not a PEM public key (the block is empty)")
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise PublicKeyPemError("not a PEM public key (its body is not base64)") from None
