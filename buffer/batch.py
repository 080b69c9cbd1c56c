"""Records handed out for publishing as columns: :class:`TakenBatch`, and :class:`BatchBuilder`
that the buffers fill row by row.

The publisher needs four things of each record: its id (to ack or release it), its stream and
route (the topic), and its wire form (the bytes it joins into a message). Handed out as one
object per record, reading them back costs Python work per record on the event loop at every
drain round; as parallel lists, built where each row is touched anyway (the buffer's writer
thread, which decrypts it), the drain slices lists and bisects running sizes instead.
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass, field

__all__ = ["BatchBuilder", "Run", "TakenBatch"]

Run = tuple[str, str, int]
"""``(stream, route, end)``: the records from the previous run's end (0 for the first run) up to
``end`` (exclusive) share this stream and route."""


@dataclass(frozen=True, slots=True)
class TakenBatch:
    """Records taken from a buffer, in the order it handed them out, as parallel columns.

    ``offsets`` has one entry more than there are records: record ``i``'s wire form and the comma
    after it take ``offsets[i + 1] - offsets[i]`` bytes. Only differences count (a slice of a
    batch keeps its parent's values), so records ``a..b-1`` joined by commas take
    ``offsets[b] - offsets[a] - 1`` bytes.
    """

    ids: list[str]
    wires: list[bytes]
    offsets: list[int]
    runs: list[Run]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def streams(self) -> frozenset[str]:
        return frozenset(stream for stream, _route, _end in self.runs)

    def slice(self, start: int, stop: int) -> TakenBatch:
        """Records ``start..stop-1`` (clamped to the batch) as a batch of their own."""
        start, stop = max(0, min(start, len(self.ids))), max(0, min(stop, len(self.ids)))
        stop = max(start, stop)
        first = bisect_right(self.runs, start, key=_end)
        runs: list[Run] = []
        for stream, route, end in self.runs[first:]:
            runs.append((stream, route, min(end, stop) - start))
            if end >= stop:
                break
        return TakenBatch(
            ids=self.ids[start:stop],
            wires=self.wires[start:stop],
            offsets=self.offsets[start : stop + 1],
            runs=runs if stop > start else [],
        )

    def without_streams(self, streams: frozenset[str]) -> tuple[TakenBatch, list[str]]:
        """This batch without the records of ``streams``, and the ids of those records."""
        kept, dropped = BatchBuilder(), []
        start = 0
        for stream, route, end in self.runs:
            if stream in streams:
                dropped.extend(self.ids[start:end])
            else:
                for i in range(start, end):
                    kept.add(self.ids[i], stream, route, self.wires[i])
            start = end
        return kept.build(), dropped


def _end(run: Run) -> int:
    return run[2]


@dataclass(slots=True)
class BatchBuilder:
    """Collects a :class:`TakenBatch` one record at a time."""

    ids: list[str] = field(default_factory=list)
    wires: list[bytes] = field(default_factory=list)
    offsets: list[int] = field(default_factory=lambda: [0])
    runs: list[Run] = field(default_factory=list)
    _stream: str | None = None
    _route: str | None = None
    _size: int = 0

    def add(self, record_id: str, stream: str, route: str, wire: bytes) -> None:
        if stream != self._stream or route != self._route:
            if self.ids:
                self.runs.append((self._stream, self._route, len(self.ids)))  # type: ignore[arg-type]
            self._stream, self._route = stream, route
        self.ids.append(record_id)
        self.wires.append(wire)
        self._size += len(wire) + 1
        self.offsets.append(self._size)

    def __len__(self) -> int:
        return len(self.ids)

    def build(self) -> TakenBatch:
        runs = list(self.runs)
        if self.ids:
            runs.append((self._stream, self._route, len(self.ids)))  # type: ignore[arg-type]
        return TakenBatch(ids=self.ids, wires=self.wires, offsets=self.offsets, runs=runs)
