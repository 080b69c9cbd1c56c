"""Records handed out as columns (:class:`heatgate.buffer.batch.TakenBatch`): the real buffer's
``take_batch`` against its ``take``, and slicing and filtering a batch against the same
operations on a list of records."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heatgate.agent.devtools.memory_buffer import MemoryBuffer
from heatgate.buffer.adapter import AsyncBuffer
from heatgate.buffer.api import StoredRecord
from heatgate.buffer.batch import BatchBuilder, IdChain, IdView, TakenBatch
from heatgate.buffer.wire import wire_form
from tests.support.buffer import T0, columns_of, records
from tests.support.leaks import run_async
from tests.test_buffer_store import with_buffer


def test_take_batch_hands_out_what_take_would_in_columns_and_marks_it_in_flight(tmp_path: Path) -> None:
    service = records("service", 3, created_s=T0 + 50, tag="s")
    telemetry = records("telemetry", 4, created_s=T0, tag="t")
    analytics = records("analytics", 2, created_s=T0 - 100, tag="a")
    expected = service + telemetry + analytics

    async def body(buffer: AsyncBuffer) -> None:
        for batch in (analytics, telemetry, service):
            await buffer.put(batch)
        first = await buffer.take_batch(5)
        assert columns_of(first) == [(r.id, r.stream, r.route) for r in expected[:5]]
        assert first.wires == [wire_form(r.id, r.payload) for r in expected[:5]]
        assert [run[:2] for run in first.runs] == [("service", "service/fault"), ("telemetry", "telemetry")]
        rest = await buffer.take(10)
        assert [r.id for r in rest] == [r.id for r in expected[5:]], "what take_batch handed out is in flight"
        assert len(await buffer.take_batch(10)) == 0
        await buffer.release(first.ids[:2])
        again = await buffer.take_batch(10, exclude_streams=frozenset({"telemetry"}))
        assert again.ids == first.ids[:2]
        await buffer.ack([*first.ids, *(r.id for r in rest)])
        assert await buffer.count() == 0

    with_buffer(tmp_path / "b.db", body)


def test_memory_buffer_batches_come_from_its_take() -> None:
    class Counting(MemoryBuffer):
        calls = 0

        async def take(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> list[StoredRecord]:
            Counting.calls += 1
            return await super().take(limit, exclude_streams=exclude_streams)

    buffer = Counting()
    new = records("telemetry", 3)

    async def main() -> TakenBatch:
        await buffer.put(new)
        return await buffer.take_batch(10)

    taken = run_async(main())
    assert Counting.calls == 1
    assert columns_of(taken) == [(r.id, r.stream, r.route) for r in new]
    assert taken.wires == [wire_form(r.id, r.payload) for r in new]


_ROUTES = {"service": "service/fault", "telemetry": "telemetry", "analytics": "analytics/heat-pump"}
_rows = st.lists(
    st.tuples(st.sampled_from(sorted(_ROUTES)), st.booleans(), st.binary(min_size=1, max_size=30)), max_size=30
)


def _batch(rows: list[tuple[str, bool, bytes]]) -> tuple[TakenBatch, list[tuple[str, str, str, bytes]]]:
    """A batch of the rows (stream, a second route or not, wire form), and the same as a list."""
    builder, flat = BatchBuilder(), []
    for n, (stream, other_route, wire) in enumerate(rows):
        route = _ROUTES[stream] + ("/2" if other_route else "")
        builder.add(f"id-{n}", stream, route, wire)
        flat.append((f"id-{n}", stream, route, wire))
    return builder.build(), flat


@given(rows=_rows, start=st.integers(-3, 35), stop=st.integers(-3, 35))
def test_a_slice_of_a_batch_is_the_batch_of_the_slice(
    rows: list[tuple[str, bool, bytes]], start: int, stop: int
) -> None:
    batch, flat = _batch(rows)
    part = batch.slice(start, stop)
    lo, hi = max(0, min(start, len(flat))), max(0, min(stop, len(flat)))
    expected = flat[lo : max(lo, hi)]
    assert columns_of(part) == [(i, s, r) for i, s, r, _w in expected]
    assert part.wires == [w for *_x, w in expected]
    assert part.streams == frozenset(s for _i, s, _r, _w in expected)


@given(rows=_rows, dropped=st.sets(st.sampled_from(sorted(_ROUTES))))
def test_a_batch_without_streams_keeps_the_others_in_order(
    rows: list[tuple[str, bool, bytes]], dropped: set[str]
) -> None:
    batch, flat = _batch(rows)
    kept, dropped_ids = batch.without_streams(frozenset(dropped))
    assert columns_of(kept) == [(i, s, r) for i, s, r, _w in flat if s not in dropped]
    assert kept.wires == [w for _i, s, _r, w in flat if s not in dropped]
    assert dropped_ids == [i for i, s, _r, _w in flat if s in dropped]


_ids = st.lists(st.text(alphabet="0123456789abcdef", min_size=1, max_size=4), max_size=20)
_bounds = st.integers(-25, 25)


@given(ids=_ids, start=st.integers(0, 22), stop=st.integers(0, 22), inner=st.tuples(_bounds, _bounds))
def test_an_id_view_reads_as_the_slice_it_stands_for(
    ids: list[str], start: int, stop: int, inner: tuple[int, int]
) -> None:
    start, stop = min(start, len(ids)), min(stop, len(ids))
    stop = max(start, stop)
    view, expected = IdView(ids, start, stop), ids[start:stop]
    assert len(view) == len(expected)
    assert list(view) == expected
    assert view == expected
    assert [view[i] for i in range(-len(expected), len(expected))] == [
        expected[i] for i in range(-len(expected), len(expected))
    ]
    with pytest.raises(IndexError):
        view[len(expected)]
    a, b = inner
    assert list(view[a:b]) == expected[a:b]  # a view of a view, by slicing
    lo, hi = max(0, min(a, len(view))), max(0, min(b, len(view)))
    assert list(IdView(view, lo, max(lo, hi))) == expected[lo:hi]  # and by construction


@given(parts=st.lists(_ids, max_size=5))
def test_an_id_chain_reads_as_its_parts_joined(parts: list[list[str]]) -> None:
    chain = IdChain(IdView(p) for p in parts)
    joined = [i for p in parts for i in p]
    assert len(chain) == len(joined)
    assert list(chain) == joined
    assert [chain[i] for i in range(-len(joined), len(joined))] == [joined[i] for i in range(-len(joined), len(joined))]
    assert bool(chain) == bool(joined)


def test_a_batch_taken_in_rounds_is_acked_by_views_on_the_writer_thread(tmp_path: Path) -> None:
    telemetry = records("telemetry", 6, created_s=T0, tag="t")

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(telemetry)
        batch = await buffer.take_batch(10)
        first, rest = batch.slice(0, 4), batch.slice(4, 6)
        assert isinstance(first.ids, IdView)
        await buffer.release(IdChain([rest.ids]))
        await buffer.ack(IdChain([first.ids[:2], first.ids[2:]]))
        again = await buffer.take_batch(10)
        assert list(again.ids) == [r.id for r in telemetry[4:]]  # released, the acked ones gone
        assert await buffer.count("telemetry") == 2

    with_buffer(tmp_path / "buffer.db", body)
