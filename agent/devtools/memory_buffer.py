"""Buffers and records for driving the publisher without the pipeline: a small in-memory
:class:`heatgate.buffer.api.Buffer` (the publisher's unit tests), the real encrypted buffer in a
directory with a fresh key, and one record of each lane. Used by the tests and by
``bench.bench_publish``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

from heatgate.agent.payloads import AnalyticsBody, FaultBody, TelemetryBody, body_encoder
from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.buffer.api import BufferStats, NewRecord, StoredRecord, StreamStats
from heatgate.buffer.batch import TakenBatch, batch_of
from heatgate.buffer.ids import new_id

__all__ = ["MemoryBuffer", "analytics_record", "fault_record", "open_real_buffer", "telemetry_record"]


class MemoryBuffer:
    """The buffer contract in a dict: no encryption, no file, no caps; what was acked and
    released is kept for assertions."""

    def __init__(self) -> None:
        self.records: dict[str, StoredRecord] = {}
        self.inflight: set[str] = set()
        self.acked: list[str] = []
        self.released: list[str] = []
        self.state: dict[str, bytes] = {}

    async def put(self, records: Sequence[NewRecord]) -> None:
        for r in records:
            self.records[r.id] = StoredRecord(
                id=r.id, stream=r.stream, route=r.route, priority=r.priority, created_s=r.created_s, payload=r.payload
            )

    async def take(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> list[StoredRecord]:
        candidates = sorted(
            (r for r in self.records.values() if r.id not in self.inflight and r.stream not in exclude_streams),
            key=lambda r: (r.priority, r.created_s, r.id),
        )[:limit]
        self.inflight.update(r.id for r in candidates)
        return candidates

    async def take_batch(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> TakenBatch:
        """:meth:`take` (so that a subclass's ``take`` is what the publisher gets), as columns."""
        return batch_of(await self.take(limit, exclude_streams=exclude_streams))

    async def ack(self, ids: Sequence[str]) -> None:
        for i in ids:
            self.records.pop(i, None)
            self.inflight.discard(i)
        self.acked.extend(ids)

    async def release(self, ids: Sequence[str]) -> None:
        self.inflight.difference_update(ids)
        self.released.extend(ids)

    async def purge_stream(self, stream: str) -> int:
        doomed = [i for i, r in self.records.items() if r.stream == stream]
        for i in doomed:
            del self.records[i]
        return len(doomed)

    async def erase_all(self) -> int:
        count = len(self.records)
        self.records.clear()
        return count

    async def stats(self) -> BufferStats:
        streams: dict[str, StreamStats] = {}
        for r in self.records.values():
            streams.setdefault(r.stream, StreamStats()).queued += 1
        return BufferStats(file_bytes=0, cap_bytes=0, streams=streams, alarms=[], key_epochs={})

    async def get_state(self, key: str) -> bytes | None:
        return self.state.get(key)

    async def set_state(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.state.pop(key, None)
        else:
            self.state[key] = value

    async def close(self) -> None:
        pass


def fault_record(n: int, *, created_s: float | None = None) -> NewRecord:
    """A service-lane fault record with a fresh id."""

    body = FaultBody(device="hp1", device_type="heat-pump", point="fault_code", code=100 + n, at="2025-01-01T00:00:00Z")
    return NewRecord(
        id=new_id(),
        stream="service",
        route="service/fault",
        priority=0,
        created_s=created_s if created_s is not None else time.time(),
        payload=body_encoder.encode(body),
    )


def telemetry_record(n: int, *, created_s: float | None = None) -> NewRecord:
    """A telemetry-lane record with a fresh id; ``n`` goes into the value."""

    body = TelemetryBody(
        device="hp1",
        device_type="heat-pump",
        point="flow_temp",
        unit="°C",
        agg="mean",
        value=float(n),
        window_start="2025-01-01T00:00:00Z",
        window_s=60,
        samples=6,
    )
    return NewRecord(
        id=new_id(),
        stream="telemetry",
        route="telemetry",
        priority=2,
        created_s=created_s if created_s is not None else time.time(),
        payload=body_encoder.encode(body),
    )


def analytics_record(n: int) -> NewRecord:
    """An analytics-lane record with a fresh id; ``n`` goes into the value."""

    body = AnalyticsBody(
        subject="ps_abc",
        device_type="heat-pump",
        region="NL-UT",
        point="cop",
        agg="mean",
        value=float(n),
        hour="2025-01-01T00:00:00Z",
        samples=1,
        sum=float(n),
        min=float(n),
        max=float(n),
    )
    return NewRecord(
        id=new_id(),
        stream="analytics",
        route="analytics/heat-pump",
        priority=3,
        created_s=time.time(),
        payload=body_encoder.encode(body),
    )


async def open_real_buffer(directory: Path | str, *, commit_interval_s: float = 0.05) -> AsyncBuffer:
    """The real encrypted SQLite buffer in ``directory`` (a fresh random master key)."""
    streams = ("service", "telemetry", "analytics", "security", "connectivity")
    return await open_buffer(
        Path(directory) / "buffer.db",
        os.urandom(32),
        cap_bytes=256 * 1024 * 1024,
        commit_interval_s=commit_interval_s,
        retention_s={s: 86400.0 * 30 for s in streams},
    )
