"""The wire contract: shipped JSON Schemas equal the types, packing bounds, decoding never raises."""

from __future__ import annotations

import json

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.agent.payloads import (
    STREAMS,
    FaultBody,
    RawMessage,
    RawRecord,
    TelemetryBody,
    body_encoder,
    schema_name,
)
from heatgate.agent.publish.decode import Deduplicator, decode_message
from heatgate.agent.publish.packing import pack, topic_for
from heatgate.agent.schemas import differing, generate, load_schema, meaning, shipped
from heatgate.buffer.api import StoredRecord
from heatgate.buffer.ids import new_id
from heatgate.buffer.wire import body_of, wire_form

GW = "gw-wire-0001"
SENT = "2025-01-01T00:00:00.000Z"


def test_shipped_schemas_equal_what_the_types_generate() -> None:
    assert differing(generate(), shipped()) == []
    assert set(generate()) == {f"heatgate.{k}.v1.json" for k in (*STREAMS, "state")}


def test_schemas_compare_by_meaning_not_by_description_whitespace() -> None:
    name, text = next(iter(generate().items()))
    document = json.loads(text)
    described = next(node for node in document["$defs"].values() if "description" in node)
    described["description"] = "\n    " + described["description"].replace(" ", "\n      ") + "\n"
    assert meaning(json.dumps(document)) == meaning(text)
    assert differing({name: text}, {name: json.dumps(document)}) == []
    described["description"] += " changed"
    assert differing({name: text}, {name: json.dumps(document)}) == [name]
    assert differing({name: text}, {}) == [name]


def test_analytics_schema_has_no_gateway_and_refuses_extra_fields() -> None:
    schema = load_schema("analytics")
    message = schema["$defs"]["AnalyticsMessage"]
    assert "gateway" not in message["properties"] and message["additionalProperties"] is False
    assert "gateway" in load_schema("service")["$defs"]["ServiceMessage"]["required"]


def _record(stream: str, route: str, body: bytes, created_s: float = 0.0, *, wire: bool = False) -> StoredRecord:
    rid = new_id()
    return StoredRecord(
        id=rid,
        stream=stream,
        route=route,
        priority=0,
        created_s=created_s,
        payload=body,
        wire=wire_form(rid, body) if wire else None,
    )


def _typed(stream: str, records: list[StoredRecord], gateway: str | None) -> bytes:
    """What msgspec makes of the whole typed message: the reference the spliced payload must equal."""
    message = RawMessage(
        schema=schema_name(stream),
        stream=stream,
        gateway=gateway,
        sent_at=SENT,
        records=[RawRecord(id=r.id, body=msgspec.Raw(r.payload)) for r in records],
    )
    return msgspec.json.encode(message)


@settings(max_examples=60, deadline=None)
@given(
    record_id=st.text(max_size=30),
    body=st.sampled_from([b"{}", rb'{"a":"\u00e9\"x"}', b"[1,2.5,null]", b"3"]),
)
def test_wire_form_is_what_the_typed_record_encodes_to(record_id: str, body: bytes) -> None:
    wire = wire_form(record_id, body)
    assert wire == msgspec.json.encode(RawRecord(id=record_id, body=msgspec.Raw(body)))
    assert json.loads(wire) == {"id": record_id, "body": json.loads(body)}
    assert body_of(record_id, wire) == body


def test_topics() -> None:
    assert topic_for("hg/v1", GW, "service/fault") == f"hg/v1/{GW}/service/fault"
    assert topic_for("hg/v1", GW, "analytics/heat-pump") == "hg/v1/analytics/heat-pump"


_values = st.one_of(st.none(), st.integers(-(2**53), 2**53), st.floats(allow_nan=False, allow_infinity=False))
_text = st.text(min_size=1, max_size=40)


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(_values, min_size=1, max_size=120),
    devices=st.lists(_text, min_size=1, max_size=3),
    max_payload=st.integers(1024, 8192),
    wired=st.lists(st.booleans(), min_size=1, max_size=7),
)
def test_packing_is_bounded_ordered_and_decodes(
    values: list[float | None], devices: list[str], max_payload: int, wired: list[bool]
) -> None:
    """Records with their stored wire form and records with only a body (older rows), mixed:
    each message is the typed message's exact bytes, within the bound, and as full as it can be."""
    records = []
    for i, value in enumerate(values):
        body = TelemetryBody(
            device=devices[i % len(devices)],
            device_type="hp",
            point="p",
            agg="mean",
            value=value,
            window_start="2025-01-01T00:00:00Z",
            window_s=60,
            samples=1,
        )
        records.append(_record("telemetry", "telemetry", body_encoder.encode(body), wire=wired[i % len(wired)]))
    packed = pack(records, prefix="hg/v1", gateway_id=GW, max_payload_bytes=max_payload, sent_at=SENT)
    assert [i for p in packed for i in p.ids] == [r.id for r in records]  # all, once, in order
    start = 0
    for p in packed:
        batch = records[start : start + len(p.ids)]
        start += len(p.ids)
        assert p.payload == _typed("telemetry", batch, GW)
        assert len(p.payload) <= max_payload or len(p.ids) == 1
        if start < len(records):  # greedy: the next record would not have fitted
            assert len(_typed("telemetry", [*batch, records[start]], GW)) > max_payload
        decoded = decode_message(p.topic, p.payload, prefix="hg/v1")
        assert decoded.valid, decoded.error
        assert [r.id for r in decoded.records] == list(p.ids)
        assert decoded.gateway == GW and decoded.stream == "telemetry"


def test_packing_groups_routes_and_drops_the_gateway_on_analytics() -> None:
    fault = FaultBody(device="d", device_type="hp", point="f", code=3, at="2025-01-01T00:00:00Z")
    analytics = (
        b'{"type":"analytics","subject":"ps","device_type":"hp","region":"NL-UT","point":"cop",'
        b'"agg":"mean","value":3.5,"hour":"2025-01-01T00:00:00Z","samples":2,"sum":7.0,"min":3.0,"max":4.0}'
    )
    records = [
        _record("service", "service/fault", body_encoder.encode(fault)),
        _record("analytics", "analytics/hp", analytics, wire=True),
        _record("service", "service/fault", body_encoder.encode(fault)),
    ]
    packed = pack(records, prefix="hg/v1", gateway_id=GW, max_payload_bytes=65536, sent_at=SENT)
    assert [p.topic for p in packed] == [f"hg/v1/{GW}/service/fault", "hg/v1/analytics/hp"]
    assert len(packed[0].ids) == 2
    assert b"gateway" not in packed[1].payload and GW.encode() not in packed[1].payload
    assert packed[1].payload == _typed("analytics", [records[1]], None)
    assert decode_message(packed[1].topic, packed[1].payload, prefix="hg/v1").valid


def test_a_body_from_another_stream_fails_its_schema() -> None:
    fault = FaultBody(device="d", device_type="hp", point="f", code=3, at="2025-01-01T00:00:00Z")
    packed = pack(
        [_record("telemetry", "telemetry", body_encoder.encode(fault))],
        prefix="hg/v1",
        gateway_id=GW,
        max_payload_bytes=65536,
        sent_at=SENT,
    )
    decoded = decode_message(packed[0].topic, packed[0].payload, prefix="hg/v1")
    assert not decoded.valid and "heatgate.telemetry/1" in (decoded.error or "")


def test_an_analytics_message_naming_the_gateway_fails() -> None:
    analytics = (
        b'{"type":"analytics","subject":"ps","device_type":"hp","region":"NL-UT","point":"cop",'
        b'"agg":"mean","value":3.5,"hour":"2025-01-01T00:00:00Z","samples":2,"sum":7.0,"min":3.0,"max":4.0}'
    )
    message = {
        "schema": "heatgate.analytics/1",
        "stream": "analytics",
        "gateway": GW,
        "sent_at": SENT,
        "records": [{"id": new_id(), "body": json.loads(analytics)}],
    }
    decoded = decode_message("hg/v1/analytics/hp", json.dumps(message).encode(), prefix="hg/v1")
    assert not decoded.valid and "gateway" in (decoded.error or "")


@settings(max_examples=300, deadline=None)
@given(
    topic=st.one_of(
        st.sampled_from(
            [
                f"hg/v1/{GW}/telemetry",
                f"hg/v1/{GW}/service/fault",
                f"hg/v1/{GW}/state",
                "hg/v1/analytics/hp",
                f"hg/v1/{GW}/cmd/x",
                "elsewhere/x",
            ]
        ),
        st.text(),
    ),
    payload=st.one_of(
        st.binary(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.text(max_size=10),
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        ).map(lambda v: json.dumps(v).encode()),
    ),
)
def test_decode_never_raises_on_arbitrary_input(topic: str, payload: bytes) -> None:
    decoded = decode_message(topic, payload, prefix="hg/v1")
    assert decoded.topic == topic
    if decoded.kind in ("message", "state", "unknown") and not decoded.valid:
        assert decoded.error


@given(ids=st.lists(st.sampled_from([new_id() for _ in range(30)]), max_size=200), capacity=st.integers(1, 40))
def test_deduplicator_is_bounded_and_exact_within_its_window(ids: list[str], capacity: int) -> None:
    dedup = Deduplicator(capacity)
    seen: list[str] = []
    for record_id in ids:
        first = dedup.first_time(record_id)
        if len(set(ids)) <= capacity:
            assert first == (record_id not in seen)
        seen.append(record_id)
        assert len(dedup) <= capacity
    if len(set(ids)) <= capacity:
        assert dedup.duplicates == len(ids) - len(set(ids))


def test_state_round_trip() -> None:
    from heatgate.agent.payloads import StatePayload

    payload = msgspec.json.encode(StatePayload(state="online", gateway=GW, version="1", health={"ok": True}))
    decoded = decode_message(f"hg/v1/{GW}/state", payload, prefix="hg/v1")
    assert decoded.valid and decoded.message.health == {"ok": True}
    assert not decode_message("hg/v1/other-gw/state", payload, prefix="hg/v1").valid
