"""HKDF-SHA256 (RFC 5869) over the standard library's ``hmac``.

The same output as ``cryptography``'s ``HKDF(hashes.SHA256(), length, salt, info).derive(ikm)``,
without importing it (see :mod:`heatgate.sodium` for why the daemon avoids it).
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

__all__ = ["MAX_LENGTH_BYTES", "hkdf_sha256"]

_HASH_BYTES: Final = hashlib.sha256().digest_size
MAX_LENGTH_BYTES: Final = 255 * _HASH_BYTES


def hkdf_sha256(ikm: bytes, *, salt: bytes | None, info: bytes, length_bytes: int) -> bytes:
    """``length_bytes`` (1 to 8160) of key material; a None or empty salt is ``HashLen`` zeros."""
    if not 0 < length_bytes <= MAX_LENGTH_BYTES:
        raise ValueError(f"HKDF-SHA256 gives 1 to {MAX_LENGTH_BYTES} bytes, not {length_bytes}")
    prk = hmac.digest(salt or bytes(_HASH_BYTES), ikm, "sha256")  # extract
    okm, block = b"", b""
    counter = 1
    while len(okm) < length_bytes:  # expand
        block = hmac.digest(prk, block + info + bytes((counter,)), "sha256")
        okm += block
        counter += 1
    return okm[:length_bytes]
