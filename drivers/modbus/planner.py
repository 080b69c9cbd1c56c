"""Compile a profile's points into the block reads that fetch them, once per device.

Points are grouped by table and poll class (``max_age_s``); within a group, sorted by address,
they are split into consecutive runs, each read by one request. The split minimises the
modelled cost ``requests * request_overhead_bytes + data bytes``: reading a gap of unused
registers is worth it when its bytes cost less than another request's framing, silence and
turnaround. A block never exceeds 125 registers (2000 bits) nor the device's
``max_registers_per_read``, never covers an address range the profile marks (or the driver
learned to be) unreadable, never spans more unused registers than the profile's
``max_gap_registers``, and with ``even_register_count`` always reads an even number of
registers (padded by one register after the last point, or before the first where the one
after cannot be read). The split is optimal for this cost (dynamic programming over the
sorted points; the tests check it against a brute force over every partition).

Points that overlap a learned unreadable range are left out of the plan
(:func:`unplanned_points` names them): the device cannot answer them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from heatgate.drivers.modbus.profile import BIT_TABLES, Point, Profile, Unreadable

__all__ = [
    "DEFAULT_REQUEST_OVERHEAD_BYTES",
    "MAX_BITS",
    "MAX_REGISTERS",
    "Block",
    "block_cost_bytes",
    "block_extent",
    "plan_points",
    "plan_profile",
    "unplanned_points",
]

MAX_REGISTERS = 125
MAX_BITS = 2000
# RTU: request frame 8 bytes + response framing 5 bytes + two 3.5-character silences +
# a slave turnaround of ~20 ms (about 19 characters at 9600 baud): some 40 characters.
DEFAULT_REQUEST_OVERHEAD_BYTES = 40


@dataclass(frozen=True, slots=True)
class Block:
    """One read request: ``count`` registers (or bits) of ``table`` from ``start``."""

    table: str
    start: int
    count: int
    points: tuple[Point, ...]
    max_age_s: float | None

    @property
    def end(self) -> int:
        return self.start + self.count


def _data_bytes(table: str, count: int) -> int:
    return (count + 7) // 8 if table in BIT_TABLES else 2 * count


def block_cost_bytes(table: str, count: int, overhead_bytes: int = DEFAULT_REQUEST_OVERHEAD_BYTES) -> int:
    """Modelled cost of one request reading ``count`` items of ``table``."""
    return overhead_bytes + _data_bytes(table, count)


def _blocked(table: str, start: int, end: int, unreadable: Sequence[Unreadable]) -> bool:
    return any(u.table == table and start <= u.end and u.start < end for u in unreadable)


def block_extent(
    table: str, start: int, end: int, unreadable: Sequence[Unreadable], *, even_count: bool = False
) -> tuple[int, int] | None:
    """The ``(start, count)`` a request for items ``start..end-1`` reads, or None when it would
    cover an unreadable range. With ``even_count`` an odd span is padded by one register after
    it, or else before it."""
    count = end - start
    candidates = [(start, count)]
    if even_count and table not in BIT_TABLES and count % 2:
        candidates = [(start, count + 1)] + ([(start - 1, count + 1)] if start > 0 else [])
    for first, size in candidates:
        if first + size <= 65536 and not _blocked(table, first, first + size, unreadable):
            return first, size
    return None


def plan_points(
    points: Sequence[Point],
    *,
    unreadable: Sequence[Unreadable] = (),
    max_gap_registers: int | None = None,
    max_registers: int | None = None,
    even_count: bool = False,
    overhead_bytes: int = DEFAULT_REQUEST_OVERHEAD_BYTES,
) -> list[Block]:
    """Optimal blocks for points that share one table and one poll class (non-overlapping)."""
    if not points:
        return []
    ordered = sorted(points, key=lambda p: p.address)
    table = ordered[0].table
    limit = MAX_BITS if table in BIT_TABLES else min(MAX_REGISTERS, max_registers or MAX_REGISTERS)
    n = len(ordered)
    inf = float("inf")
    best: list[float] = [0.0] + [inf] * n  # best[i]: cost of the first i points
    choice: list[tuple[int, int, int]] = [(0, 0, 0)] * (n + 1)
    for i in range(1, n + 1):
        end = ordered[i - 1].end
        for j in range(i, 0, -1):  # block = ordered[j-1 .. i-1]
            start = ordered[j - 1].address
            if end - start > limit:
                break
            if j < i:
                gap = ordered[j].address - ordered[j - 1].end
                if max_gap_registers is not None and gap > max_gap_registers:
                    break
            if _blocked(table, start, end, unreadable):
                break
            extent = block_extent(table, start, end, unreadable, even_count=even_count)
            if extent is None or extent[1] > limit:
                continue  # padding does not fit here; a longer block still may
            cost = best[j - 1] + block_cost_bytes(table, extent[1], overhead_bytes)
            if cost < best[i]:
                best[i], choice[i] = cost, (j, *extent)
        if best[i] == inf:  # a single point fits unless an unreadable range or the limits stop it
            raise ValueError(f"point {ordered[i - 1].name!r} cannot be read in one request within the device's limits")
    blocks: list[Block] = []
    i = n
    while i > 0:
        j, first, size = choice[i]
        members = tuple(ordered[j - 1 : i])
        blocks.append(Block(table, first, size, members, members[0].max_age_s))
        i = j - 1
    blocks.reverse()
    return blocks


def unplanned_points(profile: Profile, learned: Sequence[Unreadable] = ()) -> list[Point]:
    """The profile's points that overlap a learned unreadable range (never planned)."""
    return [p for p in profile.points if _blocked(p.table, p.address, p.end, learned)]


def plan_profile(
    profile: Profile,
    *,
    overhead_bytes: int = DEFAULT_REQUEST_OVERHEAD_BYTES,
    learned: Sequence[Unreadable] = (),
    max_registers: int | None = None,
) -> list[Block]:
    """Every block read of a device, grouped by table and poll class, in address order.

    ``learned`` adds the unreadable ranges the driver found (their points are left out);
    ``max_registers`` lowers the profile's ``max_registers_per_read`` (a learned limit)."""
    skipped = {p.name for p in unplanned_points(profile, learned)}
    unreadable = [*profile.unreadable, *learned]
    limits = [m for m in (profile.max_registers_per_read, max_registers) if m is not None]
    groups: dict[tuple[str, float], list[Point]] = {}
    for point in profile.points:
        if point.name not in skipped:
            groups.setdefault((point.table, point.max_age_s or 0.0), []).append(point)
    blocks: list[Block] = []
    for key in sorted(groups):
        blocks.extend(
            plan_points(
                groups[key],
                unreadable=unreadable,
                max_gap_registers=profile.max_gap_registers,
                max_registers=min(limits) if limits else None,
                even_count=profile.even_register_count,
                overhead_bytes=overhead_bytes,
            )
        )
    return blocks
