"""From buffered records to MQTT messages: topics, and packing records into bounded payloads.

Pure: no I/O, no clock except the ``sent_at`` string the caller gives.

A message is the typed envelope (:class:`~heatgate.agent.payloads.RawMessage`: schema, stream,
gateway, sent_at) encoded by msgspec with an empty ``records`` array, and the records' wire
forms (``{"id":…,"body":…}``, stored by the buffer when each record was committed) joined by
commas into that array: bytes are joined, no record is encoded per drain. The result is the
same bytes msgspec makes of the whole typed message (tests/test_publish_wire.py checks).
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable
from dataclasses import dataclass
from functools import partial
from itertools import accumulate
from operator import attrgetter

import msgspec

from heatgate.agent.payloads import STREAMS, RawMessage, RawRecord, schema_name
from heatgate.buffer.api import StoredRecord

__all__ = ["ANALYTICS_PREFIX", "Packed", "pack", "topic_for", "utc_now"]

ANALYTICS_PREFIX = "analytics/"
_encoder = msgspec.json.Encoder()
_stream, _route, _id, _wire = attrgetter("stream"), attrgetter("route"), attrgetter("id"), attrgetter("wire")
_EMPTY_RECORDS = b'"records":[]}'


def utc_now() -> str:
    """UTC now, ISO 8601 with milliseconds and a ``Z``."""
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


def topic_for(prefix: str, gateway_id: str, route: str) -> str:
    """``<prefix>/<gateway>/<route>``; analytics routes go to ``<prefix>/<route>`` (no gateway id)."""
    if route.startswith(ANALYTICS_PREFIX):
        return f"{prefix}/{route}"
    return f"{prefix}/{gateway_id}/{route}"


@dataclass(frozen=True, slots=True)
class Packed:
    """One message ready to publish and the records it carries."""

    topic: str
    payload: bytes
    stream: str
    ids: tuple[str, ...]


def pack(
    records: Iterable[StoredRecord],
    *,
    prefix: str,
    gateway_id: str,
    max_payload_bytes: int,
    sent_at: str,
) -> list[Packed]:
    """Group records by route (order kept within a route, routes in order of first appearance)
    and pack each group into messages of at most ``max_payload_bytes`` (a single record larger
    than that goes alone). Records of unpublished streams must be filtered out before."""
    records = list(records)
    # Per-record steps are C-level (map over attribute getters): a drain round is up to 512
    # records, and Python work per record is what the publisher costs beyond raw paho.
    streams, routes = set(map(_stream, records)), set(map(_route, records))
    groups: dict[tuple[str, str], list[StoredRecord]]
    if len(streams) == 1 and len(routes) == 1:  # the usual round: one route
        groups = {(streams.pop(), routes.pop()): records}
    else:
        groups = {}
        for record in records:
            groups.setdefault((record.stream, record.route), []).append(record)
    packed: list[Packed] = []
    for (stream, route), group in groups.items():
        if stream not in STREAMS:
            raise ValueError(f"stream {stream!r} is not published")
        analytics = route.startswith(ANALYTICS_PREFIX)
        gateway = None if analytics else gateway_id
        topic = topic_for(prefix, gateway_id, route)
        head, tail = _envelope(stream, gateway, sent_at)
        wires: list[bytes | None] = list(map(_wire, group))
        if None in wires:  # rows stored before the wire form was (buffer schema version 1)
            wires = [w if w is not None else _wire_of(r) for w, r in zip(wires, group, strict=True)]
        ids = list(map(_id, group))
        # Running totals of the records' sizes; with a comma each (the first one's stands for
        # the envelope's closing bracket), record i ends at sizes[i] + i + 1. A message ends where
        # that would pass the bound: found by bisection, not by a Python step per record.
        end_of = partial(_end_of, list(accumulate(map(len, wires))))  # type: ignore[arg-type]
        budget = max_payload_bytes - len(head) - len(tail) + 1
        start, base = 0, 0
        everything = range(len(group))
        while start < len(group):
            # an oversized record goes alone
            end = max(bisect_right(everything, base + budget, lo=start, key=end_of), start + 1)
            payload = b"".join((head, b",".join(wires[start:end]), tail))  # type: ignore[arg-type]
            packed.append(Packed(topic=topic, payload=payload, stream=stream, ids=tuple(ids[start:end])))
            base, start = end_of(end - 1), end
    return packed


def _end_of(sizes: list[int], i: int) -> int:
    return sizes[i] + i + 1


def _envelope(stream: str, gateway: str | None, sent_at: str) -> tuple[bytes, bytes]:
    """The typed envelope encoded with no records, split where the records go:
    ``(b'{…,"records":[', b']}')``."""
    empty = _encoder.encode(
        RawMessage(schema=schema_name(stream), stream=stream, gateway=gateway, sent_at=sent_at, records=[])
    )
    assert empty.endswith(_EMPTY_RECORDS), "records must stay the envelope's last field"
    return empty[:-2], empty[-2:]


def _wire_of(record: StoredRecord) -> bytes:
    """The wire form of a record the buffer handed out with its body only."""
    return _encoder.encode(RawRecord(id=record.id, body=msgspec.Raw(record.payload)))
