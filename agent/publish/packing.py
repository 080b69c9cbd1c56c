"""From buffered records to MQTT messages: topics, and packing records into bounded payloads.

Pure: no I/O, no clock except the ``sent_at`` string the caller gives.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import msgspec

from agent.payloads import STREAMS, RawMessage, RawRecord, schema_name
from buffer.api import StoredRecord

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
    groups: dict[tuple[str, str], list[StoredRecord]] = {}
    for record in records:
        groups.setdefault((record.stream, record.route), []).append(record)
    packed: list[Packed] = []
    for (stream, route), group in groups.items():
        if stream not in STREAMS:
            raise ValueError(f"stream {stream!r} is not published")
        analytics = route.startswith(ANALYTICS_PREFIX)
        gateway = None if analytics else gateway_id
        topic = topic_for(prefix, gateway_id, route)
        header_bytes = len(_encoder.encode(RawMessage(schema=schema_name(stream), stream=stream, gateway=gateway,
                                                      sent_at=sent_at, records=[])))
        batch: list[StoredRecord] = []
        size = header_bytes
        for record in group:
            cost = _RECORD_OVERHEAD_BYTES + len(record.id) + len(record.payload)
            if batch and size + cost > max_payload_bytes:
                packed.append(_encode(batch, topic, stream, gateway, sent_at))
                batch, size = [], header_bytes
            batch.append(record)
            size += cost
        if batch:
            packed.append(_encode(batch, topic, stream, gateway, sent_at))
    return packed


def _encode(batch: Sequence[StoredRecord], topic: str, stream: str, gateway: str | None, sent_at: str) -> Packed:
    message = RawMessage(
        schema=schema_name(stream),
        stream=stream,
        gateway=gateway,
        sent_at=sent_at,
        records=[RawRecord(id=r.id, body=msgspec.Raw(r.payload)) for r in batch],
    )
    return Packed(topic=topic, payload=_encoder.encode(message), stream=stream, ids=tuple(r.id for r in batch))
