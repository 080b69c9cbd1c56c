"""Records handed out for publishing as columns: :class:`TakenBatch`, and :class:`BatchBuilder`
that the buffers fill row by row.

The publisher needs four things of each record: its id (to ack or release it), its stream and
route (the topic), and its wire form (the bytes it joins into a message). Handed out as one
object per record, reading them back costs Python work per record on the event loop at every
drain round; as columns, built where each row is touched anyway (the buffer's writer thread,
which decrypts it), the drain bisects running sizes and cuts one message's records out of one
run of bytes instead.

Ids are not touched one by one on the event loop either: a message's ids are an :class:`IdView`
(a range of the batch's list, not a copy), and what the publisher acks or releases is an
:class:`IdChain` of such views, which the buffer expands on its writer thread. The loop's work
per drain round is then per message, not per record.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import TYPE_CHECKING, overload

from heatgate.buffer.wire import wire_form

if TYPE_CHECKING:
    from heatgate.buffer.api import StoredRecord

__all__ = ["BatchBuilder", "IdChain", "IdView", "Run", "TakenBatch", "WireBytes", "batch_of"]

Run = tuple[str, str, int]
"""``(stream, route, end)``: the records from the previous run's end (0 for the first run) up to
``end`` (exclusive) share this stream and route."""


WireBytes = bytes | bytearray | memoryview


class IdView(Sequence[str]):
    """Items ``start..stop-1`` of a list of ids, without copying them (a slice of a list takes a
    reference to each id; this takes one to the list)."""

    __slots__ = ("_ids", "_start", "_stop")
    _ids: Sequence[str]
    _start: int
    _stop: int

    def __init__(self, ids: Sequence[str], start: int = 0, stop: int | None = None) -> None:
        if isinstance(ids, IdView):  # a view of a view is a view of the list
            start, stop = ids._start + start, ids._start + (len(ids) if stop is None else stop)
            ids = ids._ids
        self._ids = ids
        self._start = start
        self._stop = len(ids) if stop is None else stop

    def __len__(self) -> int:
        return self._stop - self._start

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> IdView: ...

    def __getitem__(self, index: int | slice) -> str | IdView:
        if isinstance(index, slice):
            start, stop, step = index.indices(len(self))
            if step != 1:
                raise ValueError("an IdView is sliced with step 1 only")
            return IdView(self._ids, self._start + start, self._start + max(start, stop))
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError("IdView index out of range")
        return self._ids[self._start + index]

    def __iter__(self) -> Iterator[str]:
        return map(self._ids.__getitem__, range(self._start, self._stop))

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Sequence) and not isinstance(other, str | bytes):
            return len(other) == len(self) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"IdView({list(self)!r})"


class IdChain(Sequence[str]):
    """Several sequences of ids one after the other, without joining them: what the publisher
    acks or releases in one call. Its length is known at once; the ids are read when the buffer
    iterates it (on its writer thread)."""

    __slots__ = ("_length", "_parts")

    def __init__(self, parts: Iterable[Sequence[str]] = ()) -> None:
        self._parts = [part for part in parts if len(part)]
        self._length = sum(len(part) for part in self._parts)

    def __len__(self) -> int:
        return self._length

    @overload
    def __getitem__(self, index: int) -> str: ...

    @overload
    def __getitem__(self, index: slice) -> list[str]: ...

    def __getitem__(self, index: int | slice) -> str | list[str]:
        if isinstance(index, slice):
            return list(self)[index]
        if index < 0:
            index += self._length
        if not 0 <= index < self._length:
            raise IndexError("IdChain index out of range")
        for part in self._parts:
            if index < len(part):
                return part[index]
            index -= len(part)
        raise AssertionError("unreachable")

    def __iter__(self) -> Iterator[str]:
        return chain.from_iterable(self._parts)

    def __repr__(self) -> str:
        return f"IdChain({list(self)!r})"


@dataclass(frozen=True, slots=True)
class TakenBatch:
    """Records taken from a buffer, in the order it handed them out, as parallel columns.

    ``wire_bytes`` holds the records' wire forms one after the other, each followed by a comma;
    ``offsets`` (one entry more than there are records) says where each starts. Only differences
    of offsets count (a slice of a batch keeps its parent's values and shares its bytes), so
    record ``i`` is ``offsets[i + 1] - offsets[i] - 1`` bytes long, and records ``a..b-1`` joined
    by commas are one run of ``offsets[b] - offsets[a] - 1`` bytes (:meth:`joined`).
    """

    ids: Sequence[str]
    wire_bytes: WireBytes
    offsets: array[int]
    runs: list[Run]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def streams(self) -> frozenset[str]:
        return frozenset(stream for stream, _route, _end in self.runs)

    def joined(self, start: int, stop: int) -> memoryview:
        """The wire forms of records ``start..stop-1`` joined by commas (no copy)."""
        base = self.offsets[0]
        return memoryview(self.wire_bytes)[self.offsets[start] - base : self.offsets[stop] - base - 1]

    @property
    def wires(self) -> list[bytes]:
        """Each record's wire form (a copy each: for checks, not for the drain)."""
        return [bytes(self.joined(i, i + 1)) for i in range(len(self.ids))]

    def slice(self, start: int, stop: int) -> TakenBatch:
        """Records ``start..stop-1`` (clamped to the batch) as a batch of their own, sharing
        this batch's bytes."""
        start, stop = max(0, min(start, len(self.ids))), max(0, min(stop, len(self.ids)))
        stop = max(start, stop)
        first = bisect_right(self.runs, start, key=_end)
        runs: list[Run] = []
        for stream, route, end in self.runs[first:]:
            if stop == start:
                break
            runs.append((stream, route, min(end, stop) - start))
            if end >= stop:
                break
        base = self.offsets[0]
        return TakenBatch(
            ids=IdView(self.ids, start, stop),
            wire_bytes=memoryview(self.wire_bytes)[self.offsets[start] - base : self.offsets[stop] - base],
            offsets=self.offsets[start : stop + 1],
            runs=runs,
        )

    def spans(self, spans: list[tuple[int, int]]) -> TakenBatch:
        """The records of ``spans`` (``(start, stop)`` each, as :meth:`slice`) put end to end."""
        if len(spans) == 1:
            return self.slice(*spans[0])
        out = BatchBuilder()
        start = 0
        for stream, route, end in self.runs:
            for a, b in spans:
                for i in range(max(a, start), min(b, end)):
                    out.add(self.ids[i], stream, route, self.joined(i, i + 1))
            start = end
        return out.build()

    def without_streams(self, streams: frozenset[str]) -> tuple[TakenBatch, list[str]]:
        """This batch without the records of ``streams``, and the ids of those records."""
        kept, dropped = BatchBuilder(), list[str]()
        start = 0
        for stream, route, end in self.runs:
            if stream in streams:
                dropped.extend(self.ids[start:end])
            else:
                for i in range(start, end):
                    kept.add(self.ids[i], stream, route, self.joined(i, i + 1))
            start = end
        return kept.build(), dropped


def _end(run: Run) -> int:
    return run[2]


@dataclass(slots=True)
class BatchBuilder:
    """Collects a :class:`TakenBatch` one record at a time."""

    ids: list[str] = field(default_factory=list)
    wire_bytes: bytearray = field(default_factory=bytearray)
    offsets: array[int] = field(default_factory=lambda: array("q", [0]))
    runs: list[Run] = field(default_factory=list)
    _stream: str | None = None
    _route: str | None = None

    def add(self, record_id: str, stream: str, route: str, wire: WireBytes) -> None:
        if stream != self._stream or route != self._route:
            if self.ids:
                self.runs.append((self._stream, self._route, len(self.ids)))  # type: ignore[arg-type]
            self._stream, self._route = stream, route
        self.ids.append(record_id)
        self.wire_bytes += wire
        self.wire_bytes += b","
        self.offsets.append(len(self.wire_bytes))

    def __len__(self) -> int:
        return len(self.ids)

    def build(self) -> TakenBatch:
        runs = list(self.runs)
        if self.ids:
            runs.append((self._stream, self._route, len(self.ids)))  # type: ignore[arg-type]
        return TakenBatch(ids=self.ids, wire_bytes=self.wire_bytes, offsets=self.offsets, runs=runs)


def batch_of(records: Iterable[StoredRecord]) -> TakenBatch:
    """Records handed out one object each, as columns (a wire form is made for a record stored
    with its body only)."""
    batch = BatchBuilder()
    for r in records:
        batch.add(r.id, r.stream, r.route, r.wire if r.wire is not None else wire_form(r.id, r.payload))
    return batch.build()
