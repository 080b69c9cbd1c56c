"""heatgate.sodium and heatgate.hkdf against ``cryptography`` as the reference: the daemon's
libsodium primitives must give the same bytes, so that buffers, sealed state, sealed export
blobs and signed commands made before keep working (issue 20)."""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ed25519, x25519
from cryptography.hazmat.primitives.ciphers import aead
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.errors import HeatgateError
from heatgate.hkdf import MAX_LENGTH_BYTES, hkdf_sha256
from heatgate.sodium import (
    AuthenticationFailed,
    ChaCha20Poly1305,
    Ed25519PublicKey,
    X25519PrivateKey,
    X25519PublicKey,
)

keys = st.binary(min_size=32, max_size=32)
nonces = st.binary(min_size=12, max_size=12)
associated = st.one_of(st.none(), st.binary(max_size=300))
messages = st.binary(max_size=3000)

# the X25519 points of small order: an exchange with any of them gives the all-zero secret
LOW_ORDER_X25519 = [
    bytes(32),
    (1).to_bytes(32, "little"),
    bytes.fromhex("e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800"),
    bytes.fromhex("5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157"),
]


@settings(max_examples=200, deadline=None)
@given(key=keys, nonce=nonces, data=messages, ad=associated)
def test_chacha20_poly1305_gives_cryptographys_bytes_and_opens_its_output(
    key: bytes, nonce: bytes, data: bytes, ad: bytes | None
) -> None:
    ours, reference = ChaCha20Poly1305(key), aead.ChaCha20Poly1305(key)
    sealed = ours.encrypt(nonce, data, ad)
    assert sealed == reference.encrypt(nonce, data, ad)
    assert reference.decrypt(nonce, sealed, ad) == data
    assert ours.decrypt(nonce, reference.encrypt(nonce, data, ad), ad) == data


@settings(max_examples=200, deadline=None)
@given(
    key=keys,
    nonce=nonces,
    data=st.binary(max_size=200),
    ad=st.binary(max_size=40),
    where=st.sampled_from(["ciphertext", "associated", "nonce", "key", "truncated"]),
    index=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_chacha20_poly1305_refuses_any_change_as_cryptography_does(
    key: bytes, nonce: bytes, data: bytes, ad: bytes, where: str, index: int, flip: int
) -> None:
    sealed = ChaCha20Poly1305(key).encrypt(nonce, data, ad)

    def altered(value: bytes) -> bytes:
        if not value:
            return b"\x00"
        changed = bytearray(value)
        changed[index % len(value)] ^= flip
        return bytes(changed)

    if where == "ciphertext":
        sealed = altered(sealed)
    elif where == "associated":
        ad = altered(ad)
    elif where == "nonce":
        nonce = altered(nonce)
    elif where == "key":
        key = altered(key)
    else:
        sealed = sealed[: index % len(sealed)]
    with pytest.raises(AuthenticationFailed):
        ChaCha20Poly1305(key).decrypt(nonce, sealed, ad)
    with pytest.raises(InvalidTag):
        aead.ChaCha20Poly1305(key).decrypt(nonce, sealed, ad)


def test_authentication_failed_is_a_heatgate_error_and_sizes_are_value_errors() -> None:
    assert issubclass(AuthenticationFailed, HeatgateError)
    with pytest.raises(ValueError):
        ChaCha20Poly1305(bytes(31))
    with pytest.raises(ValueError):
        ChaCha20Poly1305(bytes(32)).encrypt(bytes(8), b"x", None)
    with pytest.raises(ValueError):
        ChaCha20Poly1305(bytes(32)).decrypt(bytes(13), bytes(20), None)


@settings(max_examples=300, deadline=None)
@given(
    ikm=st.binary(max_size=100),
    salt=st.one_of(st.none(), st.binary(max_size=100)),
    info=st.binary(max_size=100),
    length=st.one_of(st.integers(1, 100), st.integers(1, MAX_LENGTH_BYTES)),
)
def test_hkdf_sha256_gives_cryptographys_bytes(ikm: bytes, salt: bytes | None, info: bytes, length: int) -> None:
    expected = HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(ikm)
    assert hkdf_sha256(ikm, salt=salt, info=info, length_bytes=length) == expected


def test_hkdf_sha256_rfc5869_case_1_and_its_bounds() -> None:
    okm = hkdf_sha256(
        bytes.fromhex("0b" * 22),
        salt=bytes.fromhex("000102030405060708090a0b0c"),
        info=bytes.fromhex("f0f1f2f3f4f5f6f7f8f9"),
        length_bytes=42,
    )
    assert okm.hex() == ("3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865")
    for bad in (0, MAX_LENGTH_BYTES + 1):
        with pytest.raises(ValueError):
            hkdf_sha256(b"k", salt=None, info=b"", length_bytes=bad)


SIGNERS = [ed25519.Ed25519PrivateKey.generate() for _ in range(4)]


@settings(max_examples=200, deadline=None)
@given(
    signer=st.sampled_from(SIGNERS),
    message=st.binary(max_size=2000),
    index=st.integers(0, 10_000),
    flip=st.integers(1, 255),
)
def test_ed25519_verifies_what_cryptography_signs_and_nothing_altered(
    signer: ed25519.Ed25519PrivateKey, message: bytes, index: int, flip: int
) -> None:
    signature = signer.sign(message)
    key = Ed25519PublicKey(signer.public_key().public_bytes_raw())
    assert key.verifies(signature, message)

    forged = bytearray(signature)
    forged[index % 64] ^= flip
    assert not key.verifies(bytes(forged), message)
    altered = bytearray(message or b"\x00")
    altered[index % len(altered)] ^= flip
    assert not key.verifies(signature, bytes(altered))
    assert not key.verifies(signature[:63], message)
    assert not key.verifies(signature + b"\x00", message)
    other = next(s for s in SIGNERS if s is not signer)
    assert not Ed25519PublicKey(other.public_key().public_bytes_raw()).verifies(signature, message)


@settings(max_examples=100, deadline=None)
@given(a=keys, b=keys)
def test_x25519_exchange_and_public_keys_equal_cryptographys(a: bytes, b: bytes) -> None:
    ours_a, ours_b = X25519PrivateKey(a), X25519PrivateKey(b)
    ref_a, ref_b = x25519.X25519PrivateKey.from_private_bytes(a), x25519.X25519PrivateKey.from_private_bytes(b)
    assert ours_a.public_key().public_bytes_raw() == ref_a.public_key().public_bytes_raw()
    shared = ours_a.exchange(ours_b.public_key())
    assert shared == ref_a.exchange(ref_b.public_key())
    assert shared == ours_b.exchange(X25519PublicKey(ref_a.public_key().public_bytes_raw()))


@settings(max_examples=50, deadline=None)
@given(private=keys, point=st.sampled_from(LOW_ORDER_X25519))
def test_x25519_refuses_low_order_keys_as_cryptography_does(private: bytes, point: bytes) -> None:
    with pytest.raises(ValueError):
        X25519PrivateKey(private).exchange(X25519PublicKey(point))
    with pytest.raises(ValueError):
        x25519.X25519PrivateKey.from_private_bytes(private).exchange(x25519.X25519PublicKey.from_public_bytes(point))


def test_generated_x25519_keys_are_fresh_and_sized() -> None:
    first, second = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    assert first.private_bytes_raw() != second.private_bytes_raw()
    assert len(first.public_key().public_bytes_raw()) == 32
    for cls in (Ed25519PublicKey, X25519PublicKey, X25519PrivateKey):
        with pytest.raises(ValueError):
            cls(bytes(33))
