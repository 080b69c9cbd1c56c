"""From buffered records to MQTT messages: topics, and packing records into bounded payloads.

Pure: no I/O, no clock except the ``sent_at`` string the caller gives.

A message is the typed envelope (:class:`~heatgate.agent.payloads.RawMessage`: schema, stream,
gateway, sent_at) encoded by msgspec with an empty ``records`` array, and the records' wire
forms (``{"id":…,"body":…}``, stored by the buffer when each record was committed) joined by
commas into that array: bytes are joined, no record is encoded per drain. The result is the
same bytes msgspec makes of the whole typed message (tests/test_publish_wire.py checks).

The records come as columns (:class:`~heatgate.buffer.batch.TakenBatch`: ids, the wire forms
as one run of bytes, running sizes, runs of one route): a message's records are found by
bisecting the running sizes and cut out of the bytes at once, and its ids are a view of the
batch's (:class:`~heatgate.buffer.batch.IdView`), so packing does no Python step per record.
"""

from __future__ import annotations

import time
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import msgspec

from heatgate.agent.payloads import STREAMS, RawMessage, schema_name
from heatgate.buffer.api import StoredRecord
from heatgate.buffer.batch import IdView, TakenBatch, batch_of

__all__ = ["ANALYTICS_PREFIX", "Packed", "pack", "pack_batch", "topic_for", "utc_now"]

ANALYTICS_PREFIX = "analytics/"
_encoder = msgspec.json.Encoder()
_EMPTY_RECORDS = b'"records":[]}'


_second_text: tuple[int, str] = (-1, "")
"""The last whole second formatted (a drain round asks several times a millisecond)."""


def utc_now() -> str:
    """UTC now, ISO 8601 with milliseconds and a ``Z``."""
    global _second_text
    now = time.time()
    second = int(now)
    if _second_text[0] != second:
        _second_text = (second, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second)))
    return f"{_second_text[1]}.{int(now % 1 * 1000):03d}Z"


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
    ids: Sequence[str]


def pack(
    records: Iterable[StoredRecord],
    *,
    prefix: str,
    gateway_id: str,
    max_payload_bytes: int,
    sent_at: str,
) -> list[Packed]:
    """:func:`pack_batch` of records handed out one object each (a wire form is made for a
    record that has only its body)."""
    return pack_batch(
        batch_of(records), prefix=prefix, gateway_id=gateway_id, max_payload_bytes=max_payload_bytes, sent_at=sent_at
    )


def pack_batch(
    batch: TakenBatch,
    *,
    prefix: str,
    gateway_id: str,
    max_payload_bytes: int,
    sent_at: str,
) -> list[Packed]:
    """Group records by route (order kept within a route, routes in order of first appearance)
    and pack each group into messages of at most ``max_payload_bytes`` (a single record larger
    than that goes alone). Records of unpublished streams must be filtered out before."""
    spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
    start = 0
    for stream, route, end in batch.runs:
        spans.setdefault((stream, route), []).append((start, end))
        start = end
    packed: list[Packed] = []
    for (stream, route), group in spans.items():
        if stream not in STREAMS:
            raise ValueError(f"stream {stream!r} is not published")
        gateway = None if route.startswith(ANALYTICS_PREFIX) else gateway_id
        topic = topic_for(prefix, gateway_id, route)
        head, tail = _envelope(stream, gateway, sent_at)
        # The usual round is one run of one route: the batch itself (a view of it).
        records = batch.spans(group) if len(group) > 1 or group[0] != (0, len(batch)) else batch
        ids, offsets = records.ids, records.offsets
        # Records a..b-1 joined by commas take offsets[b] - offsets[a] - 1 bytes: a message ends
        # where that would pass the bound, found by bisection over the running sizes, and its
        # records are one run of bytes: no Python step per record.
        budget = max_payload_bytes - len(head) - len(tail) + 1
        a, stop = 0, len(ids)
        while a < stop:
            # an oversized record goes alone
            b = max(bisect_right(offsets, offsets[a] + budget, a + 1, stop + 1) - 1, a + 1)
            payload = b"".join((head, records.joined(a, b), tail))
            packed.append(Packed(topic=topic, payload=payload, stream=stream, ids=IdView(ids, a, b)))
            a = b
    return packed


@lru_cache(maxsize=16)
def _envelope(stream: str, gateway: str | None, sent_at: str) -> tuple[bytes, bytes]:
    """The typed envelope encoded with no records, split where the records go:
    ``(b'{…,"records":[', b']}')``."""
    empty = _encoder.encode(
        RawMessage(schema=schema_name(stream), stream=stream, gateway=gateway, sent_at=sent_at, records=[])
    )
    assert empty.endswith(_EMPTY_RECORDS), "records must stay the envelope's last field"
    return empty[:-2], empty[-2:]
