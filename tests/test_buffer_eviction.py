"""The eviction planner's rules (heatgate.buffer.eviction), as properties over random inventories:
no SQLite, no file system, no root. The same rules on a real disk: test_buffer_faults.py and
test_buffer_diskfull.py."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.buffer.eviction import Candidate, need_bytes, plan_eviction

PROTECTED = frozenset({"service"})
STREAMS = ("service", "telemetry", "analytics", "installer")


class ListInventory:
    """Stored rows in memory, answering as the store's SQL does. Counts how many rows were read."""

    def __init__(self, rows: list[Candidate], protected: frozenset[str]) -> None:
        self.rows = rows
        self.protected = protected
        self.rows_read = 0

    def priorities(self, *, protected: bool) -> set[int]:
        return {r.priority for r in self.rows if (r.stream in self.protected) == protected}

    def oldest_first(self, priority: int, *, protected: bool, want_bytes: int) -> Iterator[Candidate]:
        chosen = [r for r in self.rows if r.priority == priority and (r.stream in self.protected) == protected]
        for row in sorted(chosen, key=lambda r: (r.created_s, r.key)):
            self.rows_read += 1
            yield row


@dataclass
class Case:
    stored: list[Candidate]
    incoming: list[Candidate]
    need: int
    for_incoming: bool


@st.composite
def cases(draw: st.DrawFn) -> Case:
    def candidate(key: int, incoming: bool) -> Candidate:
        return Candidate(
            key=key,
            stream=draw(st.sampled_from(STREAMS)),
            priority=draw(st.integers(0, 4)),
            created_s=float(draw(st.integers(0, 20))),  # few values: ties happen
            size_bytes=draw(st.integers(1, 600)),
            incoming=incoming,
        )

    stored = [candidate(seq, False) for seq in range(1, draw(st.integers(0, 25)) + 1)]
    for_incoming = draw(st.booleans())
    incoming = [candidate(i, True) for i in range(draw(st.integers(0, 12)))] if for_incoming else []
    total = sum(c.size_bytes for c in stored + incoming)
    return Case(stored, incoming, draw(st.integers(-100, total + 300)), for_incoming)


def plan(case: Case) -> list[Candidate]:
    inventory = ListInventory(case.stored, PROTECTED)
    return list(
        plan_eviction(inventory, case.incoming, case.need, protected_streams=PROTECTED, for_incoming=case.for_incoming)
    )


def is_protected(c: Candidate) -> bool:
    return c.stream in PROTECTED


def policy_order(c: Candidate) -> tuple[int, bool, float, int]:
    """Lowest priority (highest number) first; stored before incoming; oldest first."""
    return (-c.priority, c.incoming, c.created_s, c.key)


@settings(max_examples=400, deadline=None)
@given(cases())
def test_service_goes_only_when_nothing_else_is_left(case: Case) -> None:
    victims = plan(case)
    if any(is_protected(v) for v in victims):
        others = [c for c in case.stored + case.incoming if not is_protected(c)]
        assert set(map(id, others)) <= set(map(id, victims)), "service evicted while another stream was left"
        first_protected = next(i for i, v in enumerate(victims) if is_protected(v))
        assert all(is_protected(v) for v in victims[first_protected:]), "service taken before the others"


@settings(max_examples=400, deadline=None)
@given(cases())
def test_unprotected_victims_are_the_policy_order_prefix(case: Case) -> None:
    """Lowest priority first, oldest first, stored rows of a priority before its incoming ones,
    and never skipping one: the victims are exactly the first ones in that order."""
    victims = [v for v in plan(case) if not is_protected(v)]
    everyone = sorted((c for c in case.stored + case.incoming if not is_protected(c)), key=policy_order)
    assert victims == everyone[: len(victims)]


@settings(max_examples=400, deadline=None)
@given(cases())
def test_service_rows_go_oldest_first_within_lowest_priority(case: Case) -> None:
    victims = [v for v in plan(case) if is_protected(v) and not v.incoming]
    service = sorted((c for c in case.stored if is_protected(c)), key=policy_order)
    assert victims == service[: len(victims)]


@settings(max_examples=400, deadline=None)
@given(cases())
def test_enough_is_freed_and_no_more_than_needed(case: Case) -> None:
    victims = plan(case)
    freed = sum(v.size_bytes for v in victims)
    # Minimal: without its last victim the plan would not have freed enough.
    if victims:
        assert freed - victims[-1].size_bytes < case.need
    if freed < case.need:
        # Short only where the rules allow no more: every unprotected record is gone, and
        # service rows are kept either because none are left or because rule 4 holds them.
        unprotected = [c for c in case.stored + case.incoming if not is_protected(c)]
        assert set(map(id, unprotected)) <= set(map(id, victims))
        service_left = [c for c in case.stored if is_protected(c) and c not in victims]
        if service_left:
            assert case.for_incoming


@settings(max_examples=400, deadline=None)
@given(cases())
def test_for_incoming_service_rows_stay_and_incoming_service_is_refused_last(case: Case) -> None:
    """Making room for incoming records never evicts a stored service row (it may be the only
    record of its point's latest state); incoming service records are named (to be refused)
    only once every unprotected record, stored or incoming, is a victim."""
    victims = plan(case)
    protected = [v for v in victims if is_protected(v)]
    if not case.for_incoming:
        assert not any(v.incoming for v in protected)
        return
    assert all(v.incoming for v in protected)
    if protected:
        unprotected = [c for c in case.stored + case.incoming if not is_protected(c)]
        assert set(map(id, unprotected)) <= set(map(id, victims))


def test_no_need_no_victims_and_nothing_read() -> None:
    stored = [Candidate(1, "telemetry", 5, 1.0, 100)]
    inventory = ListInventory(stored, PROTECTED)
    assert list(plan_eviction(inventory, [], 0, protected_streams=PROTECTED, for_incoming=False)) == []
    assert inventory.rows_read == 0


def test_reads_the_inventory_only_as_far_as_needed() -> None:
    """A backlog of any size is never read whole to free a few rows."""
    stored = [Candidate(seq, "telemetry", 5, float(seq), 100) for seq in range(1, 10_001)]
    inventory = ListInventory(stored, PROTECTED)
    victims = list(plan_eviction(inventory, [], 250, protected_streams=PROTECTED, for_incoming=False))
    assert [v.key for v in victims] == [1, 2, 3]
    assert inventory.rows_read == 3


def test_a_full_disk_keeps_service_rows_while_telemetry_is_incoming() -> None:
    """Room for a batch of telemetry on a disk that holds only faults: the batch's own records go
    (oldest first), never a stored fault."""
    stored = [Candidate(seq, "service", 0, float(seq), 200) for seq in range(1, 6)]
    incoming = [Candidate(i, "telemetry", 5, 100.0 + i, 200, incoming=True) for i in range(4)]
    victims = list(
        plan_eviction(ListInventory(stored, PROTECTED), incoming, 500, protected_streams=PROTECTED, for_incoming=True)
    )
    assert [(v.stream, v.key, v.incoming) for v in victims] == [
        ("telemetry", 0, True),
        ("telemetry", 1, True),
        ("telemetry", 2, True),
    ]


def test_a_new_fault_on_a_disk_of_faults_is_refused_not_stored_over_the_oldest() -> None:
    """Rule 4: the stored faults stay (the store refuses the new one; the agent coalesces it)."""
    stored = [Candidate(seq, "service", 0, float(seq), 200) for seq in range(1, 6)]
    incoming = [Candidate(0, "service", 0, 100.0, 200, incoming=True)]
    victims = list(
        plan_eviction(
            ListInventory(stored, PROTECTED), incoming, 10_000, protected_streams=PROTECTED, for_incoming=True
        )
    )
    assert [(v.key, v.incoming) for v in victims] == [(0, True)]


def test_an_over_cap_file_sheds_service_rows_when_nothing_else_is_left() -> None:
    stored = [Candidate(1, "telemetry", 5, 9.0, 100)] + [Candidate(s, "service", 0, float(s), 100) for s in (2, 3, 4)]
    victims = list(
        plan_eviction(ListInventory(stored, PROTECTED), [], 250, protected_streams=PROTECTED, for_incoming=False)
    )
    assert [v.key for v in victims] == [1, 2, 3]


def test_need_bytes_keeps_a_one_percent_margin() -> None:
    assert need_bytes(used_bytes=900, budget_bytes=1000, extra_bytes=0) == -90
    assert need_bytes(used_bytes=900, budget_bytes=1000, extra_bytes=100) == 10
    assert need_bytes(used_bytes=0, budget_bytes=1000, extra_bytes=0) < 0
