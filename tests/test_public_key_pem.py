"""heatgate.public_key_pem reads the Ed25519/X25519 public keys ``cryptography`` writes, and refuses
anything else with a reason (the daemon pins keys with it, without importing cryptography)."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa, x448, x25519
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.agent.commands.keys import CommandKeyFileError, load_ed25519_public, load_x25519_public
from heatgate.public_key_pem import PublicKeyAlgorithm, PublicKeyPemError, public_key_pem, raw_public_key

PEM = serialization.Encoding.PEM
SPKI = serialization.PublicFormat.SubjectPublicKeyInfo


def _spki(private: object) -> bytes:
    return private.public_key().public_bytes(PEM, SPKI)  # type: ignore[attr-defined]


@settings(max_examples=100, deadline=None)
@given(raw=st.binary(min_size=32, max_size=32), algorithm=st.sampled_from(["Ed25519", "X25519"]))
def test_reads_what_cryptography_writes_and_writes_the_same(raw: bytes, algorithm: PublicKeyAlgorithm) -> None:
    key = (
        x25519.X25519PrivateKey.from_private_bytes(raw)
        if algorithm == "X25519"
        else ed25519.Ed25519PrivateKey.from_private_bytes(raw)
    ).public_key()
    pem = key.public_bytes(PEM, SPKI)
    assert raw_public_key(pem, algorithm) == key.public_bytes_raw()
    assert public_key_pem(key.public_bytes_raw(), algorithm) == pem
    assert raw_public_key(pem.replace(b"\n", b"\r\n"), algorithm) == key.public_bytes_raw()
    assert raw_public_key(b"\n  " + pem + b"\n\n", algorithm) == key.public_bytes_raw()
    explained = "Subject: the backend's command key, café\n".encode() + pem + b"pinned on 2026-11-29\n"
    assert raw_public_key(explained, algorithm) == key.public_bytes_raw(), "RFC 7468 explanatory text"


def test_the_other_algorithm_is_named() -> None:
    ed_pem, x_pem = _spki(ed25519.Ed25519PrivateKey.generate()), _spki(x25519.X25519PrivateKey.generate())
    with pytest.raises(PublicKeyPemError, match=r"not an X25519 public key \(it is an Ed25519 public key\)"):
        raw_public_key(ed_pem, "X25519")
    with pytest.raises(PublicKeyPemError, match=r"not an Ed25519 public key \(it is an X25519 public key\)"):
        raw_public_key(x_pem, "Ed25519")


@pytest.mark.parametrize(
    "private",
    [
        ed448.Ed448PrivateKey.generate(),
        x448.X448PrivateKey.generate(),
        ec.generate_private_key(ec.SECP256R1()),
        rsa.generate_private_key(public_exponent=65537, key_size=1024),
    ],
    ids=["ed448", "x448", "p256", "rsa"],
)
def test_public_keys_of_other_algorithms_are_refused(private: object) -> None:
    for algorithm in ("Ed25519", "X25519"):
        with pytest.raises(PublicKeyPemError, match=f"not an {algorithm} public key"):
            raw_public_key(_spki(private), algorithm)


def test_private_keys_and_malformed_files_are_refused() -> None:
    private = ed25519.Ed25519PrivateKey.generate()
    good = _spki(private)
    body = good.splitlines()[1]
    der = base64.b64decode(body)
    private_pem = private.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    cases = {
        b"": "expected one '-----BEGIN PUBLIC KEY-----' ... '-----END PUBLIC KEY-----' block",
        b"\xff\xfe": "expected one '-----BEGIN PUBLIC KEY-----'",
        good.replace(body, body[:-4] + "é".encode() + b"=="): "not base64",
        private_pem: "holds '-----BEGIN PRIVATE KEY-----'",
        private_pem + good: "holds '-----BEGIN PRIVATE KEY-----'",
        good + good: "expected one '-----BEGIN PUBLIC KEY-----'",
        good.replace(b"-----END PUBLIC KEY-----", b""): "expected one '-----BEGIN PUBLIC KEY-----'",
        good.replace(body, body[:-4] + b"!!!!"): "not base64",
        good.replace(body, base64.b64encode(der[:-1])): "43 bytes of DER, expected 44",
        good.replace(body, base64.b64encode(der + b"\x00")): "45 bytes of DER, expected 44",
        good.replace(body, base64.b64encode(b"\x31" + der[1:])): "another algorithm",
        good.replace(body, base64.b64encode(der[:11] + b"\x01" + der[12:])): "another algorithm",
        b"-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n": "the block is empty",
    }
    for pem, reason in cases.items():
        with pytest.raises(PublicKeyPemError) as caught:
            raw_public_key(pem, "Ed25519")
        assert reason in caught.value.reason, (pem, caught.value.reason)
        assert isinstance(caught.value, ValueError)


@settings(max_examples=300, deadline=None)
@given(data=st.binary(max_size=200))
def test_garbage_is_a_pem_error(data: bytes) -> None:
    with pytest.raises(PublicKeyPemError):
        raw_public_key(data, "Ed25519")


def test_the_daemons_key_loading_names_the_file(tmp_path: Path) -> None:
    pinned = tmp_path / "command.pub"
    pinned.write_bytes(_spki(x25519.X25519PrivateKey.generate()))
    with pytest.raises(CommandKeyFileError, match=f"^{pinned}: not an Ed25519 public key"):
        load_ed25519_public(pinned)
    with pytest.raises(CommandKeyFileError, match=f"^{tmp_path / 'missing.pub'}: "):
        load_x25519_public(tmp_path / "missing.pub")
    assert load_x25519_public(pinned).public_bytes_raw() == raw_public_key(pinned.read_bytes(), "X25519")
