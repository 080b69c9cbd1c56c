"""From buffered records to MQTT messages: topics, and packing records into bounded payloads.

Pure: no I/O, no clock except the ``sent_at`` string the caller gives.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import accumulate

import msgspec

from heatgate.agent.payloads import STREAMS, RawMessage, RawRecord, schema_name
from heatgate.buffer.api import StoredRecord

__all__ = ["ANALYTICS_PREFIX", "Packed", "pack", "topic_for", "utc_now"]

ANALYTICS_PREFIX = "analytics/"
_RECORD_OVERHEAD_BYTES = len(b'{"id":"","body":},')
_encoder = msgspec.json.Encoder()


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
    keys = {(r.stream, r.route) for r in records}
    groups: dict[tuple[str, str], list[StoredRecord]]
    if len(keys) == 1:  # the usual round: one route (the loop below costs more per record)
        groups = {keys.pop(): records}
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
        header_bytes = len(
            _encoder.encode(
                RawMessage(schema=schema_name(stream), stream=stream, gateway=gateway, sent_at=sent_at, records=[])
            )
        )
        # Running totals of the records' encoded sizes; a message ends where its sum would pass
        # the bound (found by bisection, not by a Python step per record).
        ends = list(accumulate([_RECORD_OVERHEAD_BYTES + len(r.id) + len(r.payload) for r in group]))
        budget = max_payload_bytes - header_bytes
        start, base = 0, 0
        while start < len(group):
            end = max(bisect_right(ends, base + budget, lo=start), start + 1)  # an oversized one alone
            packed.append(_encode(group[start:end], topic, stream, gateway, sent_at))
            base, start = ends[end - 1], end
    return packed


def _encode(batch: Sequence[StoredRecord], topic: str, stream: str, gateway: str | None, sent_at: str) -> Packed:
    message = RawMessage(
        schema=schema_name(stream),
        stream=stream,
        gateway=gateway,
        sent_at=sent_at,
        records=[RawRecord(id=r.id, body=msgspec.Raw(r.payload)) for r in batch],
    )
    return Packed(topic=topic, payload=_encoder.encode(message), stream=stream, ids=tuple([r.id for r in batch]))
