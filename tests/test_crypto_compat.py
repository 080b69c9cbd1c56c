"""What heatgate wrote with ``cryptography`` opens with libsodium (issue 20): buffers of both
ciphers (records, wrapped data keys, sealed state), a sealed export and a signed command, all
made by the version before the change (tests/support/crypto_compat.py says how)."""

from __future__ import annotations

import base64
import gzip
import json
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from heatgate.agent.commands.keys import key_id
from heatgate.agent.commands.nonces import NonceStore
from heatgate.agent.commands.seal import open_sealed
from heatgate.agent.commands.verify import CommandVerifier, Verified
from heatgate.buffer.adapter import open_buffer
from heatgate.sodium import X25519PrivateKey as SodiumX25519PrivateKey
from tests.support import crypto_compat as fixture
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

DATA = Path(__file__).parent / "data" / "crypto-compat"
BLOBS = json.loads((DATA / "blobs.json").read_text())


@pytest.mark.parametrize("cipher", ["chacha20-poly1305", "aes-256-gcm"])
def test_a_buffer_written_with_cryptography_opens_and_grows(tmp_path: Path, cipher: str) -> None:
    db = tmp_path / "buffer.db"
    db.write_bytes(gzip.decompress((DATA / f"buffer-{cipher}.db.gz").read_bytes()))
    db.chmod(0o600)
    expected = {r.id: r for r in fixture.new_records()}

    async def main() -> None:
        buffer = await open_buffer(
            db,
            fixture.MASTER_KEY,
            cap_bytes=1 << 20,
            cipher=cipher,
            retention_s=fixture.RETENTION_S,
            clock=lambda: fixture.T0 + 300.0,
        )
        try:
            for name, value in fixture.STATE.items():
                assert await buffer.get_state(name) == value
            taken = await buffer.take(100)
            assert sorted(r.id for r in taken) == sorted(expected)
            for record in taken:
                assert (record.stream, record.route, record.payload) == (
                    expected[record.id].stream,
                    expected[record.id].route,
                    expected[record.id].payload,
                )
            await buffer.set_state("consent.analytics", b"new")
            assert await buffer.get_state("consent.analytics") == b"new"
        finally:
            await buffer.close()

    run_async(main())


def test_a_sealed_export_made_with_cryptography_opens() -> None:
    blob = base64.b64decode(BLOBS["sealed_export"])
    recipient = X25519PrivateKey.from_private_bytes(fixture.RECIPIENT_RAW)
    assert open_sealed(recipient, blob) == fixture.EXPORT
    assert open_sealed(SodiumX25519PrivateKey(fixture.RECIPIENT_RAW), blob) == fixture.EXPORT


def test_a_command_signed_before_verifies() -> None:
    public = Ed25519PrivateKey.from_private_bytes(fixture.SIGNER_RAW).public_key()

    async def main() -> object:
        nonces = await NonceStore.load(MemoryState(), clock=lambda: fixture.T0)
        verifier = CommandVerifier("gw-compat-0001", {key_id(public): public}, {}, nonces, clock=lambda: fixture.T0)
        return await verifier.verify(base64.b64decode(BLOBS["signed_envelope"]))

    verdict = run_async(main())
    assert isinstance(verdict, Verified), verdict
    assert verdict.command == "ping"


def test_the_fixture_is_what_the_generator_writes_today(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The generator still runs (on today's code), and its deterministic part is unchanged."""
    monkeypatch.setattr(sys, "argv", ["crypto_compat", str(tmp_path)])
    fixture.main()
    today = json.loads((tmp_path / "blobs.json").read_text())
    assert today["signed_envelope"] == BLOBS["signed_envelope"], "Ed25519 signatures are deterministic"
    sealed = base64.b64decode(today["sealed_export"])
    assert open_sealed(SodiumX25519PrivateKey(fixture.RECIPIENT_RAW), sealed) == fixture.EXPORT
