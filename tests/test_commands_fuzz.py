"""Property tests of the envelope parser and verifier: arbitrary bytes and mutated valid
envelopes give a Refusal (or, for a mutation that changes nothing signed, the same envelope),
never an exception."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatgate.agent.commands import reasons
from heatgate.agent.commands.envelope import decode_envelope, encode_envelope, envelope_signing_bytes
from heatgate.agent.commands.nonces import NonceStore
from heatgate.agent.commands.sign import sign_approval, sign_envelope
from heatgate.agent.commands.verify import CommandVerifier, Refusal, Verified
from tests.support.commands import GATEWAY, NOW_S, Clock, Keys, write_bounds
from tests.support.memory_state import MemoryState

KEYS = Keys()
WRITE: dict[str, Any] = {"device": "heatpump", "point": "flow_setpoint", "value": 45.5}
VALID = [
    encode_envelope(
        sign_envelope(KEYS.command, target=GATEWAY, command="privacy.erase", args={"all": True}, issued_at=NOW_S)
    ),
    encode_envelope(
        sign_envelope(
            KEYS.command,
            target=GATEWAY,
            command="device.write",
            args=WRITE,
            issued_at=NOW_S,
            approval=sign_approval(KEYS.approval, operator="op-1", target=GATEWAY, issued_at=NOW_S, **WRITE),
        )
    ),
]
SETTINGS = settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)


@pytest.fixture
def verify() -> Iterator[Any]:
    loop = asyncio.new_event_loop()
    nonces = loop.run_until_complete(NonceStore.load(MemoryState(), clock=Clock()))
    verifier = CommandVerifier(
        GATEWAY,
        KEYS.command_keys(),
        KEYS.approval_keys(),
        nonces,
        clock=Clock(),
        write_bounds=write_bounds,
        max_bytes=4096,
    )
    yield lambda raw: loop.run_until_complete(verifier.verify(raw))
    loop.close()


def check(result: Verified | Refusal, original: bytes | None = None) -> None:
    if isinstance(result, Refusal):
        assert result.reason in reasons.REFUSAL_REASONS
        assert len(result.detail) <= 200
        return
    assert isinstance(result, Verified)
    assert original is not None, "random bytes can never verify"
    # only a mutation that changes nothing signed (white space, escaping, order) can pass
    assert envelope_signing_bytes(result.envelope) == envelope_signing_bytes(decode_envelope(original))


@SETTINGS
@given(raw=st.binary(max_size=5000))
def test_arbitrary_bytes_are_refused(verify: Any, raw: bytes) -> None:
    check(verify(raw))


@SETTINGS
@given(
    doc=st.dictionaries(
        st.sampled_from(
            [
                "v",
                "target",
                "command",
                "args",
                "issued_at",
                "expires_at",
                "nonce",
                "key_id",
                "approval",
                "signature",
                "x",
            ]
        ),
        json_values,
    )
)
def test_arbitrary_json_objects_are_refused(verify: Any, doc: dict[str, Any]) -> None:
    check(verify(json.dumps(doc).encode()))


@SETTINGS
@given(index=st.integers(0, len(VALID) - 1), data=st.data())
def test_byte_mutations_of_valid_envelopes(verify: Any, index: int, data: st.DataObject) -> None:
    raw = bytearray(VALID[index])
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = data.draw(st.integers(0, max(len(raw) - 1, 0)))
        if op == "flip" and raw:
            raw[pos] ^= data.draw(st.integers(1, 255))
        elif op == "insert":
            raw[pos:pos] = data.draw(st.binary(min_size=1, max_size=8))
        elif op == "delete" and raw:
            del raw[pos]
        elif op == "truncate":
            del raw[pos:]
    check(verify(bytes(raw)), VALID[index])


@SETTINGS
@given(index=st.integers(0, len(VALID) - 1), data=st.data())
def test_field_mutations_of_valid_envelopes(verify: Any, index: int, data: st.DataObject) -> None:
    doc = json.loads(VALID[index])
    target = doc
    path = data.draw(st.sampled_from(["", "args", "approval", "approval.write"]))
    for part in filter(None, path.split(".")):
        if isinstance(target.get(part), dict):
            target = target[part]
    key = data.draw(st.sampled_from([*target.keys(), "extra"]))
    if data.draw(st.booleans()) and key in target:
        del target[key]
    else:
        target[key] = data.draw(json_values)
    check(verify(json.dumps(doc).encode()), VALID[index])


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


deep_values = st.recursive(
    st.none() | st.integers() | st.text(alphabet='[]{}"\\ab', max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(alphabet='[]{}"\\k', max_size=4), inner, max_size=3)
    ),
    max_leaves=30,
)


@SETTINGS
@given(value=deep_values, ascii_only=st.booleans())
def test_nesting_depth_is_the_json_depth_whatever_the_strings_hold(value: Any, ascii_only: bool) -> None:
    """The scan before parsing counts brackets only outside strings (escaped quotes included)."""
    from heatgate.agent.commands.envelope import nesting_depth

    assert nesting_depth(json.dumps(value, ensure_ascii=ascii_only).encode()) == _depth(value)


@SETTINGS
@given(depth=st.integers(0, 6000), opener=st.sampled_from([b"[", b'{"a":']))
def test_any_nesting_is_refused_never_raised(verify: Any, depth: int, opener: bytes) -> None:
    raw = b'{"v":1,"args":' + opener * depth + b"1" + b"}"
    check(verify(raw))
