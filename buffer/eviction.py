"""The eviction policy, as a pure planner: which stored rows and which incoming records go when
the buffer needs room. No SQLite, no clock, no I/O: the store hands it an :class:`Inventory` of
its rows (read lazily, so a backlog of any size is never loaded whole) and the records about to be
inserted, and deletes and counts what the planner names.

The rules (docs/buffer.md, "Cap, eviction, full disk, corruption"):

1. Unprotected streams (everything but ``protected_streams``: ``service``) go first: the lowest
   priority (highest number) first; within a priority the stored rows oldest first, then the
   incoming records oldest first (they are the newest).
2. A protected row goes only when nothing of any other stream is left, stored or incoming: a full
   disk never evicts ``service`` while telemetry is left.
3. Incoming protected records are never *evicted*; when even rule 4 leaves no room, the planner
   names them (``incoming=True``, newest last) and the store *refuses* them (``rejected``, the put
   raises :class:`~heatgate.buffer.errors.RecordsNotStored`): the producer keeps them, and the
   agent coalesces refused service records to the latest state per device and point.
4. When making room for incoming records (``for_incoming``), stored protected rows never go: a
   stored service row may be the only record of its point's latest state, which the buffer
   cannot tell without reading payloads. Without ``for_incoming`` (an over-cap file shrinking
   back under the cap) protected rows go, oldest first, as far as needed.
5. Nothing beyond what is needed: the planning stops as soon as the victims free ``need_bytes``.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["ROW_OVERHEAD_BYTES", "Candidate", "Inventory", "need_bytes", "plan_eviction", "record_bytes"]

ROW_OVERHEAD_BYTES = 120
"""Estimated bytes a row costs beyond its ciphertext (clear columns, two indexes, the id index)."""

_SEAL_OVERHEAD_BYTES = 28
"""Nonce (12) and tag (16) around a payload's ciphertext."""


def record_bytes(payload_bytes: int) -> int:
    """What a record of ``payload_bytes`` is estimated to take on disk, stored."""
    return payload_bytes + _SEAL_OVERHEAD_BYTES + ROW_OVERHEAD_BYTES


def need_bytes(*, used_bytes: int, budget_bytes: int, extra_bytes: int) -> int:
    """How much must go so that the live pages plus ``extra_bytes`` fit ``budget_bytes`` with a
    1 % margin; zero or less when nothing must."""
    return used_bytes - (budget_bytes - extra_bytes - budget_bytes // 100)


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored row (``key`` is its ``seq``) or an incoming record (``key`` is its index in the
    batch), as far as the policy cares."""

    key: int
    stream: str
    priority: int
    created_s: float
    size_bytes: int
    incoming: bool = False


class Inventory(Protocol):
    """The stored rows, split into protected and unprotected streams. Each call returns what is
    stored at the time of the call; the planner asks for a class (protected or not) only before
    any row of that class is deleted."""

    def priorities(self, *, protected: bool) -> Iterable[int]:
        """The distinct priorities of stored rows of protected (or unprotected) streams (a
        superset will do: a priority without such rows yields nothing below)."""
        ...

    def oldest_first(self, priority: int, *, protected: bool, want_bytes: int) -> Iterable[Candidate]:
        """Stored rows of that priority of protected (or unprotected) streams, oldest first (ties
        by ``key``). ``want_bytes`` is what the planner still needs: a hint of how far it will
        read (it may stop earlier, or read on)."""
        ...


def plan_eviction(
    inventory: Inventory,
    incoming: Sequence[Candidate],
    need_bytes: int,
    *,
    protected_streams: frozenset[str],
    for_incoming: bool,
) -> Iterator[Candidate]:
    """The victims, in the order the rules (module docstring) take them: stored rows to delete and
    incoming records to drop (``incoming=True``), until they free ``need_bytes`` or the rules
    allow no more. Lazy: it reads the inventory only as far as it needs to."""
    freed = 0
    need = need_bytes
    unprotected_incoming = [c for c in incoming if c.stream not in protected_streams]
    protected_incoming = [c for c in incoming if c.stream in protected_streams]
    # Unprotected streams: stored rows by priority (highest number first), then that priority's
    # incoming records.
    levels = set(inventory.priorities(protected=False)) | {c.priority for c in unprotected_incoming}
    for priority in sorted(levels, reverse=True):
        freed = yield from _until_freed(
            inventory.oldest_first(priority, protected=False, want_bytes=need - freed), freed, need
        )
        records = sorted((c for c in unprotected_incoming if c.priority == priority), key=lambda c: c.created_s)
        freed = yield from _until_freed(records, freed, need)
        if freed >= need:
            return
    if freed >= need:
        return
    # Nothing of any other stream is left.
    if for_incoming:  # rule 4: the incoming protected records are refused, not stored rows evicted
        freed = yield from _until_freed(protected_incoming, freed, need)
        return
    for priority in sorted(set(inventory.priorities(protected=True)), reverse=True):
        freed = yield from _until_freed(
            inventory.oldest_first(priority, protected=True, want_bytes=need - freed), freed, need
        )


def _until_freed(candidates: Iterable[Candidate], freed: int, need: int) -> Generator[Candidate, None, int]:
    """Yield candidates until ``freed`` reaches ``need`` (not reading one more than that takes);
    returns what is freed then."""
    if freed >= need:
        return freed
    for candidate in candidates:
        yield candidate
        freed += candidate.size_bytes
        if freed >= need:
            break
    return freed
