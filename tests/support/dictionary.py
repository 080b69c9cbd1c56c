"""A dictionary attack on published bytes, as an outside reviewer runs it.

A low-entropy personal value (a Dutch postcode: 4 digits and 2 letters) hidden behind an unkeyed
hash is found by hashing every candidate and looking for the digest. :func:`attack` does that
over a candidate *neighbourhood* of the planted value: for each candidate it hashes what an
attacker would hash (the value in its usual spellings, and whole documents built from a public
template with the candidate filled in), with the common digests and HMACs under keys an
attacker knows, and searches every published byte for each digest in hex, base64 and base32,
whole or truncated (at least 12 characters).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable

__all__ = ["Published", "attack", "digest_forms", "postcode_neighbourhood", "postcode_spellings"]

POSTCODE_LETTERS = "ABCDEFGHJKLMNPRSTVWXZ"
_HASHES = ("sha256", "sha1", "md5", "sha512", "blake2b", "blake2s", "sha3_256")
_TOKEN = re.compile(rb"[A-Za-z0-9+/_=-]{12,}")
_FORM_CHARS = 12


def postcode_neighbourhood(postcode: str, *, digit_radius: int, letters: str = POSTCODE_LETTERS) -> list[str]:
    """Every ``NNNN XY`` with the digits within ``digit_radius`` of the planted one and any two
    letters; the planted value is among them."""
    digits = int(postcode[:4])
    low, high = max(1000, digits - digit_radius), min(9999, digits + digit_radius)
    pairs = [a + b for a in letters for b in letters]
    found = [f"{d} {pair}" for d in range(low, high + 1) for pair in pairs]
    assert postcode.upper() in found or postcode[5:] not in pairs
    return found


def postcode_spellings(postcode: str) -> list[bytes]:
    """``3511 AB``, ``3511AB``, ``3511 ab``, ``3511ab``, ``35``, ``3511``."""
    compact = postcode.replace(" ", "")
    return [s.encode() for s in {postcode, compact, postcode.lower(), compact.lower()}]


def digest_forms(data: bytes, hmac_keys: Iterable[bytes] = ()) -> set[str]:
    """The first 12 characters of each digest of ``data`` as hex, base64 (both alphabets) and
    lowercase base32: a longer or truncated published digest contains them."""
    digests = [hashlib.new(name, data).digest() for name in _HASHES]
    digests += [hmac.digest(key, data, "sha256") for key in hmac_keys]
    forms: set[str] = set()
    for digest in digests:
        forms.add(digest.hex()[:_FORM_CHARS])
        forms.add(base64.b64encode(digest).decode()[:_FORM_CHARS])
        forms.add(base64.urlsafe_b64encode(digest).decode()[:_FORM_CHARS])
        forms.add(base64.b32encode(digest).decode().lower()[:_FORM_CHARS])
    return forms


class Published:
    """Every published byte, indexed so that a 12-character form is looked up in O(1)."""

    def __init__(self, blobs: Iterable[bytes]) -> None:
        self._windows: set[str] = set()
        self.size_bytes = 0
        for blob in blobs:
            self.size_bytes += len(blob)
            for token in _TOKEN.findall(blob):
                for variant in {token, token.lower()}:
                    text = variant.decode()
                    for start in range(len(text) - _FORM_CHARS + 1):
                        self._windows.add(text[start : start + _FORM_CHARS])

    def __contains__(self, form: str) -> bool:
        return form in self._windows


def attack(
    published: Published,
    candidates: Iterable[str],
    preimages: Callable[[str], Iterable[bytes]],
    *,
    hmac_keys: Iterable[bytes] = (),
) -> list[str]:
    """The candidates any of whose preimages' digests appears in ``published``."""
    keys = list(hmac_keys)
    hits = []
    for candidate in candidates:
        for data in preimages(candidate):
            if any(form in published for form in digest_forms(data, [*keys, candidate.encode()])):
                hits.append(candidate)
                break
    return hits
