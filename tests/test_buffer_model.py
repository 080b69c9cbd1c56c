"""Random put/take/ack/release/restart sequences against a model of the buffer (hypothesis)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.buffer.api import NewRecord
from heatgate.buffer.ids import IdGenerator
from heatgate.buffer.wire import wire_form
from tests.support.buffer import PRIORITY, RETENTION_S, ROUTE, T0, Clock, columns_of
from tests.support.leaks import run_async

KEY = bytes(32)
STREAMS = ("service", "telemetry", "analytics")

op = st.one_of(
    st.tuples(st.just("put"), st.sampled_from(STREAMS), st.integers(1, 5)),
    st.tuples(
        st.sampled_from(("take", "take_batch")), st.integers(0, 8), st.sets(st.sampled_from(STREAMS), max_size=2)
    ),
    st.tuples(st.just("ack"), st.integers(0, 10), st.none()),
    st.tuples(st.just("release"), st.integers(0, 10), st.none()),
    st.tuples(st.just("restart"), st.none(), st.none()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(op, max_size=25))
def test_buffer_matches_model(ops: list[tuple[str, object, object]]) -> None:
    with tempfile.TemporaryDirectory() as name:
        run_async(_run(Path(name) / "b.db", ops))


async def _open(db: Path) -> AsyncBuffer:
    return await open_buffer(db, KEY, cap_bytes=8 << 20, commit_interval_s=0, retention_s=RETENTION_S, clock=Clock())


async def _run(db: Path, ops: list[tuple[str, object, object]]) -> None:
    ids = IdGenerator(lambda: T0)
    stored: dict[str, NewRecord] = {}
    inflight: list[str] = []
    tick = 0
    buffer = await _open(db)
    try:
        for kind, a, b in ops:
            if kind == "put":
                assert isinstance(a, str) and isinstance(b, int)
                batch = []
                for _ in range(b):
                    tick += 1
                    rid = ids.new()
                    batch.append(
                        NewRecord(
                            id=rid,
                            stream=a,
                            route=ROUTE[a],
                            priority=PRIORITY[a],
                            created_s=T0 + tick,
                            payload=rid.encode() * 2,
                        )
                    )
                await buffer.put(batch)
                stored.update((r.id, r) for r in batch)
            elif kind in ("take", "take_batch"):
                assert isinstance(a, int) and isinstance(b, set)
                expected = sorted(
                    (r for r in stored.values() if r.id not in inflight and r.stream not in b),
                    key=lambda r: (r.priority, r.created_s),
                )[:a]
                if kind == "take":
                    got = await buffer.take(a, exclude_streams=frozenset(b))
                    assert [r.id for r in got] == [r.id for r in expected]
                    assert all(r.payload == stored[r.id].payload for r in got)
                    inflight.extend(r.id for r in got)
                else:
                    taken = await buffer.take_batch(a, exclude_streams=frozenset(b))
                    assert taken.ids == [r.id for r in expected]
                    assert taken.wires == [wire_form(r.id, r.payload) for r in expected]
                    assert columns_of(taken) == [(r.id, r.stream, r.route) for r in expected]
                    inflight.extend(taken.ids)
            elif kind in ("ack", "release"):
                assert isinstance(a, int)
                chosen, inflight = inflight[:a], inflight[a:]
                if kind == "ack":
                    await buffer.ack(chosen)
                    for rid in chosen:
                        del stored[rid]
                else:
                    await buffer.release(chosen)
            else:
                await buffer.close()
                buffer = await _open(db)
                inflight = []  # in-flight state is memory only
            assert await buffer.count() == len(stored)
        stats = await buffer.stats()
        assert sum(s.queued for s in stats.streams.values()) == len(stored)
    finally:
        await buffer.close()
