"""The backend's decoder and ``heatgate tail``'s view never raise on what comes off the wire:
arbitrary bytes, and valid messages mutated (bytes replaced, invalid UTF-8 inserted, cut, doubled)."""

from __future__ import annotations

import io

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from heatgate.agent.cli.tail import _View
from heatgate.agent.devtools.memory_buffer import analytics_record, fault_record, telemetry_record
from heatgate.agent.payloads import StatePayload
from heatgate.agent.publish.decode import Decoded, decode_message
from heatgate.agent.publish.packing import pack
from heatgate.buffer.api import NewRecord, StoredRecord

GW = "gw-fuzz-0001"
PREFIX = "hg/v1"
SENT = "2025-01-01T00:00:00.000Z"
TOPICS = [
    f"{PREFIX}/{GW}/telemetry",
    f"{PREFIX}/{GW}/service/fault",
    f"{PREFIX}/{GW}/state",
    f"{PREFIX}/analytics/heat-pump",
    f"{PREFIX}/{GW}/cmd/x",
    "elsewhere/x",
]
INVALID_UTF8 = [b"\xff", b"\xfe\xff", b"\x80", b"\xc3", b"\xc3\x28", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"\xe2\x82"]


def _stored(record: NewRecord) -> StoredRecord:
    return StoredRecord(
        id=record.id,
        stream=record.stream,
        route=record.route,
        priority=0,
        created_s=0.0,
        payload=record.payload,
    )


def _valid_messages() -> list[tuple[str, bytes]]:
    records = [
        _stored(telemetry_record(1)),
        _stored(telemetry_record(2)),
        _stored(fault_record(3)),
        _stored(analytics_record(4)),
    ]
    packed = pack(records, prefix=PREFIX, gateway_id=GW, max_payload_bytes=4096, sent_at=SENT)
    state = msgspec.json.encode(StatePayload(state="online", gateway=GW, version="1", health={"sources": 2}))
    return [(p.topic, p.payload) for p in packed] + [(f"{PREFIX}/{GW}/state", state)]


VALID = _valid_messages()


def _render(*decoded: Decoded) -> str:
    view = _View(Console(file=io.StringIO(), width=200))
    for d in decoded:
        view.add(d, [True] * len(d.records))
    out = io.StringIO()
    Console(file=out, width=200, color_system=None).print(view.table())
    return out.getvalue()


def test_the_unmutated_messages_are_valid() -> None:
    assert len(VALID) == 4
    for topic, payload in VALID:
        decoded = decode_message(topic, payload, prefix=PREFIX)
        assert decoded.valid, decoded.error


@pytest.mark.parametrize("topic", [f"{PREFIX}/{GW}/telemetry", f"{PREFIX}/{GW}/state"])
@pytest.mark.parametrize(
    "payload",
    [
        b'{"\xff":1}',  # invalid UTF-8 in a key: msgspec raises UnicodeDecodeError, not its own error
        b'{"schema":"heatgate.telemetry/1","\xc3\x28":1}',
        b'{"schema":"\xff"}',
        b'{"state":"online","gateway":"' + GW.encode() + b'","version":"1","health":{"\xed\xa0\x80":1}}',
        b'{"schema":"heatgate.telemetry/1","stream":"telemetry","records":[{"id":"x","body":' + b"[" * 100_000 + b"}]}",
    ],
)
def test_bytes_msgspec_does_not_wrap_are_reported_not_raised(topic: str, payload: bytes) -> None:
    decoded = decode_message(topic, payload, prefix=PREFIX)
    assert not decoded.valid and decoded.error  # "not JSON: invalid UTF-8", or the schema error met first
    assert decoded.records == []


def test_field_names_and_topics_from_the_wire_are_never_markup() -> None:
    bad = decode_message(f"{PREFIX}/{GW}/telemetry", b'{"[/]":1,"[bold]x":2}', prefix=PREFIX)
    assert not bad.valid and "[/]" in (bad.error or "")
    odd_topic = decode_message(f"{PREFIX}/[/red]/telemetry", b"{}", prefix=PREFIX)
    text = _render(bad, odd_topic)  # rich would raise MarkupError on an unescaped "[/]"
    assert "INVALID" in text and "[/red]" in text


def _mutate(data: st.DataObject, payload: bytes) -> bytes:
    for _ in range(data.draw(st.integers(1, 4))):
        at = data.draw(st.integers(0, len(payload)))
        kind = data.draw(st.sampled_from(["replace", "insert_bad_utf8", "insert", "delete", "double", "cut"]))
        if kind == "replace" and payload:
            at = min(at, len(payload) - 1)
            payload = payload[:at] + bytes([data.draw(st.integers(0, 255))]) + payload[at + 1 :]
        elif kind == "insert_bad_utf8":
            payload = payload[:at] + data.draw(st.sampled_from(INVALID_UTF8)) + payload[at:]
        elif kind == "insert":
            payload = payload[:at] + data.draw(st.binary(min_size=1, max_size=8)) + payload[at:]
        elif kind == "delete":
            payload = payload[:at] + payload[at + data.draw(st.integers(1, 16)) :]
        elif kind == "double":
            end = min(len(payload), at + data.draw(st.integers(1, 64)))
            payload = payload[:end] + payload[at:end] + payload[end:]
        else:
            payload = payload[:at]
    return payload


def _check(topic: str, payload: bytes) -> None:
    decoded = decode_message(topic, payload, prefix=PREFIX)
    assert decoded.topic == topic
    if decoded.valid:
        assert decoded.error is None
        assert all(isinstance(r.id, str) and isinstance(r.body, dict) for r in decoded.records)
    elif decoded.kind in ("message", "state", "unknown"):
        assert decoded.error
    _render(decoded)


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_decode_never_raises_on_mutated_valid_messages(data: st.DataObject) -> None:
    topic, payload = data.draw(st.sampled_from(VALID))
    topic = data.draw(st.sampled_from([topic, topic, *TOPICS]))  # mostly its own topic
    _check(topic, _mutate(data, payload))


@settings(max_examples=200, deadline=None)
@given(topic=st.one_of(st.sampled_from(TOPICS), st.text(max_size=40)), payload=st.binary(max_size=2000))
def test_decode_never_raises_on_arbitrary_bytes(topic: str, payload: bytes) -> None:
    _check(topic, payload)
