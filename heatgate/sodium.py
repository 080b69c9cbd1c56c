"""The daemon's public-key and AEAD cryptography, on libsodium (PyNaCl's compiled module).

``cryptography`` statically links OpenSSL and registers every binding when imported: about
8.6 MiB of RSS on the daemon's hot path, against about 1.2 MiB for libsodium (issue 20). So the
daemon encrypts, verifies and seals with this module only; ``cryptography`` stays for provisioning,
``heatgate keys``, doctor and signing (CLI side), where memory does not matter.

* :class:`ChaCha20Poly1305`: the RFC 8439 AEAD (12-byte nonce), with cryptography's interface
  ``encrypt(nonce, data, associated)`` / ``decrypt(nonce, data, associated)``; the output is
  ``ciphertext || tag (16 bytes)``, byte for byte what ``cryptography`` produces.
* :class:`Ed25519PublicKey`: verifying a signature (nothing here signs).
* :class:`X25519PrivateKey`, :class:`X25519PublicKey`: ephemeral keys and the exchange.

Authentication failures raise :class:`AuthenticationFailed`; malformed sizes raise ``ValueError``,
as ``cryptography`` does.

Every call goes to libsodium through PyNaCl's compiled module (``nacl._sodium``, the one
``nacl.bindings`` wraps): ``nacl.bindings``' own wrapper checks and copies enough per call to make
a 160-byte record about 3 times slower than with ``cryptography``, while the direct call is faster
than ``cryptography`` for records of that size (``bench.bench_aead``); and importing
``nacl.bindings`` loads a module for every libsodium family (another 0.4 MiB of RSS). ``pynacl``
is pinned below 2 for that reason; the property tests against ``cryptography`` guard it.
"""

from __future__ import annotations

import os
from typing import Final

from nacl._sodium import ffi as _ffi
from nacl._sodium import lib as _lib

from heatgate.errors import HeatgateError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "SIGNATURE_BYTES",
    "TAG_BYTES",
    "AuthenticationFailed",
    "ChaCha20Poly1305",
    "Ed25519PublicKey",
    "X25519PrivateKey",
    "X25519PublicKey",
]

if _lib.sodium_init() == -1:  # 0 the first time, 1 after: idempotent and thread-safe
    raise ImportError("libsodium could not be initialised")

_aead_encrypt = _lib.crypto_aead_chacha20poly1305_ietf_encrypt
_aead_decrypt = _lib.crypto_aead_chacha20poly1305_ietf_decrypt
_NULL = _ffi.NULL
_from_buffer = _ffi.from_buffer

KEY_BYTES: Final = 32
NONCE_BYTES: Final = 12
TAG_BYTES: Final = 16
SIGNATURE_BYTES: Final = 64


class AuthenticationFailed(HeatgateError):
    """An AEAD ciphertext did not authenticate: wrong key, altered data or associated data."""


def _exact(value: bytes, size_bytes: int, what: str) -> bytes:
    if len(value) != size_bytes:
        raise ValueError(f"{what} must be {size_bytes} bytes, not {len(value)}")
    return bytes(value)


class ChaCha20Poly1305:
    """ChaCha20-Poly1305 (RFC 8439, the IETF variant) under one 32-byte key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        self._key = _exact(key, KEY_BYTES, "ChaCha20-Poly1305 key")

    def encrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        """``ciphertext || tag``. ``nonce``, ``data`` and ``associated`` are ``bytes`` (the hot
        path of the buffer: no conversions here)."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes, not {len(nonce)}")
        if associated is None:
            associated = b""
        out = bytearray(len(data) + TAG_BYTES)
        _aead_encrypt(_from_buffer(out), _NULL, data, len(data), associated, len(associated), _NULL, nonce, self._key)
        return bytes(out)

    def decrypt(self, nonce: bytes, data: bytes, associated: bytes | None) -> bytes:
        """The plaintext; raises :class:`AuthenticationFailed` unless ``data`` authenticates."""
        if len(nonce) != NONCE_BYTES:
            raise ValueError(f"nonce must be {NONCE_BYTES} bytes, not {len(nonce)}")
        if len(data) < TAG_BYTES:
            raise AuthenticationFailed("ciphertext shorter than its tag")
        if associated is None:
            associated = b""
        out = bytearray(len(data) - TAG_BYTES)
        if _aead_decrypt(
            _from_buffer(out), _NULL, _NULL, data, len(data), associated, len(associated), nonce, self._key
        ):
            raise AuthenticationFailed("ciphertext did not authenticate")
        return bytes(out)


class Ed25519PublicKey:
    """An Ed25519 public key (32 raw bytes) that verifies signatures."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = _exact(raw, KEY_BYTES, "Ed25519 public key")

    @classmethod
    def from_public_bytes(cls, raw: bytes) -> Ed25519PublicKey:
        return cls(raw)

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def verifies(self, signature: bytes, message: bytes) -> bool:
        """Whether ``signature`` (64 bytes) is this key's signature of ``message``."""
        if len(signature) != SIGNATURE_BYTES:
            return False
        signed = bytes(signature) + bytes(message)  # libsodium's combined form: signature || message
        opened = bytearray(len(signed))
        return bool(
            _lib.crypto_sign_open(
                _from_buffer(opened), _ffi.new("unsigned long long *"), signed, len(signed), self._raw
            )
            == 0
        )


class X25519PublicKey:
    """An X25519 public key (32 raw bytes)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = _exact(raw, KEY_BYTES, "X25519 public key")

    @classmethod
    def from_public_bytes(cls, raw: bytes) -> X25519PublicKey:
        return cls(raw)

    def public_bytes_raw(self) -> bytes:
        return self._raw


class X25519PrivateKey:
    """An X25519 private key (32 raw bytes; libsodium clamps the scalar when it is used)."""

    __slots__ = ("_raw",)

    def __init__(self, raw: bytes) -> None:
        self._raw = _exact(raw, KEY_BYTES, "X25519 private key")

    @classmethod
    def generate(cls) -> X25519PrivateKey:
        return cls(os.urandom(KEY_BYTES))

    @classmethod
    def from_private_bytes(cls, raw: bytes) -> X25519PrivateKey:
        return cls(raw)

    def private_bytes_raw(self) -> bytes:
        return self._raw

    def public_key(self) -> X25519PublicKey:
        public = bytearray(KEY_BYTES)
        _lib.crypto_scalarmult_base(_from_buffer(public), self._raw)
        return X25519PublicKey(bytes(public))

    def exchange(self, peer: X25519PublicKey) -> bytes:
        """The 32-byte shared secret; ``ValueError`` when it is all zeros (a low-order peer key)."""
        shared = bytearray(KEY_BYTES)
        if _lib.crypto_scalarmult(_from_buffer(shared), self._raw, peer.public_bytes_raw()) != 0:
            raise ValueError("X25519 exchange gave the all-zero secret (low-order public key)")
        return bytes(shared)
