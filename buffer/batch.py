"""Records handed out for publishing as columns: :class:`TakenBatch`, and :class:`BatchBuilder`
that the buffers fill row by row.

The publisher needs four things of each record: its id (to ack or release it), its stream and
route (the topic), and its wire form (the bytes it joins into a message). Handed out as one
object per record, reading them back costs Python work per record on the event loop at every
drain round; as columns, built where each row is touched anyway (the buffer's writer thread,
which decrypts it), the drain bisects running sizes and cuts one message's records out of one
run of bytes instead.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right
from dataclasses import dataclass, field

__all__ = ["BatchBuilder", "Run", "TakenBatch", "WireBytes"]

Run = tuple[str, str, int]
"""``(stream, route, end)``: the records from the previous run's end (0 for the first run) up to
``end`` (exclusive) share this stream and route."""


WireBytes = bytes | bytearray | memoryview


@dataclass(frozen=True, slots=True)
class TakenBatch:
    """Records taken from a buffer, in the order it handed them out, as parallel columns.

    ``wire_bytes`` holds the records' wire forms one after the other, each followed by a comma;
    ``offsets`` (one entry more than there are records) says where each starts. Only differences
    of offsets count (a slice of a batch keeps its parent's values and shares its bytes), so
    record ``i`` is ``offsets[i + 1] - offsets[i] - 1`` bytes long, and records ``a..b-1`` joined
    by commas are one run of ``offsets[b] - offsets[a] - 1`` bytes (:meth:`joined`).
    """

    ids: list[str]
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
            ids=self.ids[start:stop],
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
        kept, dropped = BatchBuilder(), []
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
