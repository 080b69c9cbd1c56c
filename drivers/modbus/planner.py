"""Compile a profile's points into the block reads that fetch them, once per device.

Points are grouped by table and poll class (``max_age_s``); within a group, sorted by address,
they are split into consecutive runs, each read by one request. The split minimises the
modelled cost ``requests * request_overhead_bytes + data bytes``: reading a gap of unused
registers is worth it when its bytes cost less than another request's framing, silence and
turnaround. A block never exceeds 125 registers (2000 bits), never covers an address range
the profile marks unreadable, and never spans more unused registers than the profile's
``max_gap_registers``. The split is optimal for this cost (dynamic programming over the sorted
points; the tests check it against a brute force over every partition).
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
    "plan_points",
    "plan_profile",
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


def plan_points(
    points: Sequence[Point],
    *,
    unreadable: Sequence[Unreadable] = (),
    max_gap_registers: int | None = None,
    overhead_bytes: int = DEFAULT_REQUEST_OVERHEAD_BYTES,
) -> list[Block]:
    """Optimal blocks for points that share one table and one poll class (non-overlapping)."""
    if not points:
        return []
    ordered = sorted(points, key=lambda p: p.address)
    table = ordered[0].table
    limit = MAX_BITS if table in BIT_TABLES else MAX_REGISTERS
    n = len(ordered)
    inf = float("inf")
    best: list[float] = [0.0] + [inf] * n  # best[i]: cost of the first i points
    choice = [0] * (n + 1)
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
            cost = best[j - 1] + block_cost_bytes(table, end - start, overhead_bytes)
            if cost < best[i]:
                best[i], choice[i] = cost, j
        if best[i] == inf:  # a single point always fits; only an unreadable overlap stops it
            raise ValueError(f"point {ordered[i - 1].name!r} cannot be read in one request")
    blocks: list[Block] = []
    i = n
    while i > 0:
        j = choice[i]
        members = tuple(ordered[j - 1 : i])
        start = members[0].address
        blocks.append(Block(table, start, members[-1].end - start, members, members[0].max_age_s))
        i = j - 1
    blocks.reverse()
    return blocks


def plan_profile(profile: Profile, *, overhead_bytes: int = DEFAULT_REQUEST_OVERHEAD_BYTES) -> list[Block]:
    """Every block read of a device, grouped by table and poll class, in address order."""
    groups: dict[tuple[str, float], list[Point]] = {}
    for point in profile.points:
        groups.setdefault((point.table, point.max_age_s or 0.0), []).append(point)
    blocks: list[Block] = []
    for key in sorted(groups):
        blocks.extend(
            plan_points(
                groups[key],
                unreadable=profile.unreadable,
                max_gap_registers=profile.max_gap_registers,
                overhead_bytes=overhead_bytes,
            )
        )
    return blocks
