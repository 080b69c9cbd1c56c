"""Sealed boxes and the sealed privacy export: only the recipient's private key opens them."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.agent.commands.dispatch import SEALED_FORMAT
from heatgate.agent.commands.envelope import b64url_decode, b64url_encode, encode_envelope
from heatgate.agent.commands.keys import raw_public
from heatgate.agent.commands.seal import SealError, open_sealed, seal
from heatgate.agent.commands.sign import sign_envelope
from tests.support.commands import GATEWAY, NOW_S, Clock, Keys, make_processor
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

RECIPIENT = X25519PrivateKey.generate()
OTHER = X25519PrivateKey.generate()


@settings(max_examples=50, deadline=None)
@given(data=st.binary(max_size=2000))
def test_round_trip_and_fresh_each_time(data: bytes) -> None:
    a, b = seal(RECIPIENT.public_key(), data), seal(RECIPIENT.public_key(), data)
    assert a != b, "a fresh ephemeral key per box"
    assert open_sealed(RECIPIENT, a) == data == open_sealed(RECIPIENT, b)
    with pytest.raises(SealError):
        open_sealed(OTHER, a)


@settings(max_examples=100, deadline=None)
@given(pos=st.integers(0, 200), flip=st.integers(1, 255))
def test_any_altered_byte_is_detected(pos: int, flip: int) -> None:
    blob = bytearray(seal(RECIPIENT.public_key(), b"x" * 150))
    blob[pos % len(blob)] ^= flip
    with pytest.raises(SealError):
        open_sealed(RECIPIENT, bytes(blob))


@settings(max_examples=100, deadline=None)
@given(blob=st.binary(max_size=100))
def test_garbage_is_a_seal_error(blob: bytes) -> None:
    with pytest.raises(SealError):
        open_sealed(RECIPIENT, blob)


def test_export_result_is_sealed_to_the_signed_recipient() -> None:
    keys = Keys()
    raw = encode_envelope(
        sign_envelope(
            keys.command,
            target=GATEWAY,
            command="privacy.export",
            issued_at=NOW_S,
            args={"recipient": b64url_encode(raw_public(RECIPIENT.public_key()))},
        )
    )

    async def go() -> tuple[Any, Any]:
        processor, _calls, audit, _ = await make_processor(MemoryState(), keys, Clock())
        return await processor.handle(raw), audit

    response, audit = run_async(go())
    assert response.outcome == "done"
    assert response.result["format"] == SEALED_FORMAT
    blob = b64url_decode(response.result["sealed"])
    assert b"telemetry" not in blob and b"register" not in msgspec.json.encode(response)
    opened = msgspec.json.decode(open_sealed(RECIPIENT, blob))
    assert opened == {"records": [{"stream": "telemetry", "value": 21.5}], "register": {"streams": 5}}
    assert response.result["bytes"] == len(open_sealed(RECIPIENT, blob))
    with pytest.raises(SealError):
        open_sealed(OTHER, blob)
    assert [a.outcome for a in audit.records] == ["accepted", "done"]
    assert b"21.5" not in msgspec.json.encode(audit.records), "the audit log does not copy the export"
