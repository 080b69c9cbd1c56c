"""The service ledger: the backend's picture of every fault and status point across restarts and
disk pressure; windows published once with a lagging source; availability debouncing."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from heatgate.agent.availability import AvailabilityTracker, Down, down_targets
from heatgate.agent.health import SourceView
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.service_ledger import ServiceLedger
from heatgate.buffer.api import NewRecord
from heatgate.drivers.reading import PointKind, Quality
from tests.support.privacy import T0, bodies, make_pipeline, reading

F, S, M = PointKind.FAULT, PointKind.STATUS, PointKind.MEASUREMENT


def _restart(pipeline: Pipeline, *, settle: bool = True) -> Pipeline:
    """What the daemon does: commit (settle), save the ledger; a new agent loads it."""
    saved = pipeline.ledger.encode()
    fresh = make_pipeline()
    fresh.ledger = ServiceLedger.decode(saved)
    return fresh


def _commit(pipeline: Pipeline, records: list[NewRecord], refused: frozenset[str] = frozenset()) -> frozenset[str]:
    return pipeline.ledger.settle([r.id for r in records], refused)


def _faults(records: list[NewRecord]) -> list[tuple[Any, bool]]:
    return [(b["code"], b.get("active", True)) for b in bodies(records, "service") if b["type"] == "fault"]


def test_a_fault_that_cleared_while_stopped_is_cleared_at_start() -> None:
    pipeline = make_pipeline()
    raised = pipeline.process([reading("fault_code", F, 0, T0), reading("fault_code", F, 12, T0 + 1)])
    assert _faults(raised) == [(12, True)]
    _commit(pipeline, raised)
    # Stopped; the device clears; started again: the first good reading publishes the clear.
    again = _restart(pipeline)
    assert again.process([reading("fault_code", F, 0, T0 + 100, quality=Quality.COMM_ERROR)]) == []
    assert again.process([reading("status", S, None, T0 + 100, quality=Quality.STALE)]) == []
    cleared = again.process([reading("fault_code", F, 0, T0 + 101)])
    assert _faults(cleared) == [(12, False)]
    assert again.process([reading("fault_code", F, 0, T0 + 102)]) == []


def test_unchanged_at_start_publishes_nothing_and_a_new_code_raises() -> None:
    pipeline = make_pipeline()
    first = pipeline.process([reading("fault_code", F, 7, T0), reading("mode", S, "heating", T0)])
    assert len(first) == 2  # a raise and the first value ever of the status point
    _commit(pipeline, first)
    again = _restart(pipeline)
    assert again.process([reading("fault_code", F, 7, T0 + 60), reading("mode", S, "heating", T0 + 60)]) == []
    third = _restart(again)
    changed = third.process([reading("fault_code", F, 9, T0 + 120), reading("mode", S, "standby", T0 + 120)])
    assert _faults(changed) == [(7, False), (9, True)]
    assert [b["value"] for b in bodies(changed) if b["type"] == "status"] == ["standby"]


def test_records_in_flight_at_a_kill_are_restated() -> None:
    """Saved before the commit (the daemon's order), killed before the next save: the point is
    uncertain, so its state is published again even though the device reads the same."""
    pipeline = make_pipeline()
    _commit(pipeline, pipeline.process([reading("fault_code", F, 0, T0)]))
    pipeline.process([reading("fault_code", F, 5, T0 + 1)])  # committed or not: unknown
    again = _restart(pipeline)
    assert _faults(again.process([reading("fault_code", F, 5, T0 + 60)])) == [(5, True)]
    # ...and a clear of a code that may have been raised: stated as a clear.
    pipeline = make_pipeline()
    _commit(pipeline, pipeline.process([reading("fault_code", F, 5, T0)]))
    pipeline.process([reading("fault_code", F, 0, T0 + 1)])
    again = _restart(pipeline)
    assert _faults(again.process([reading("fault_code", F, 0, T0 + 60)])) == [(5, False)]


def test_refused_records_coalesce_to_the_latest_state_with_a_count() -> None:
    """A full disk refuses service records: the ledger takes them back, folds what follows, and
    publishes the latest state of each point with the changes it folded."""
    pipeline = make_pipeline()
    _commit(pipeline, pipeline.process([reading("fault_code", F, 0, T0), reading("other", F, 3, T0)]))
    seen = Counter[str]()
    records = pipeline.process([reading("fault_code", F, 4, T0 + 1)])
    seen["fault_code"] += 1
    taken = _commit(pipeline, records, frozenset(r.id for r in records))
    assert taken == {r.id for r in records}
    for i in range(2, 12):  # toggles while the disk is full: nothing published one by one
        assert pipeline.process([reading("fault_code", F, 4 * (i % 2), T0 + i)]) == []
        seen["fault_code"] += 1
    owed = pipeline.flush(T0 + 20)
    faults = [b for b in bodies(owed) if b["type"] == "fault"]
    # The latest reading was 4 (i = 11): told "no fault", so one raise carrying the other nine.
    assert [(b["point"], b["code"], b.get("active", True), b.get("coalesced", 0)) for b in faults] == [
        ("fault_code", 4, True, 10)
    ]
    assert len(faults) + sum(b.get("coalesced", 0) for b in faults) == seen["fault_code"]
    _commit(pipeline, owed)
    assert pipeline.flush(T0 + 30) == []
    # A toggle that ends where it began is restated with its count (the backend learns of it).
    records = pipeline.process([reading("fault_code", F, 0, T0 + 40)])
    _commit(pipeline, records, frozenset(r.id for r in records))
    pipeline.process([reading("fault_code", F, 4, T0 + 41)])
    restated = bodies(pipeline.flush(T0 + 50))
    assert [(b["code"], b.get("active", True), b.get("coalesced", 0)) for b in restated] == [(4, True, 1)]


def test_coalescing_accounts_for_every_change() -> None:
    """Random refusals and readings: for every point the backend's last record is the device's
    last state, and records + coalesced = the changes the pipeline saw."""
    rng = random.Random(21)
    pipeline = make_pipeline()
    last: dict[str, int] = {}
    changes = Counter[str]()
    published: list[dict[str, Any]] = []
    for step in range(400):
        point = rng.choice(["f1", "f2", "f3"])
        value = rng.choice([0, 0, 1, 2])
        before = last.get(point, 0)
        if value != before:
            changes[point] += (before != 0) + (value != 0)
        last[point] = value
        records = pipeline.process([reading(point, F, value, T0 + step)])
        if step % 37 == 0:
            records += pipeline.flush(T0 + step)
        refused = frozenset(r.id for r in records if rng.random() < 0.4)
        _commit(pipeline, records, refused)
        published += [b for r, b in zip(records, bodies(records), strict=True) if r.id not in refused]
    for _ in range(10):  # the disk has room again
        owed = pipeline.flush(T0 + 1000)
        _commit(pipeline, owed)
        published += bodies(owed)
    for point in ("f1", "f2", "f3"):
        mine = [b for b in published if b["point"] == point]
        final = mine[-1]
        state = final["code"] if final.get("active", True) else 0
        assert state == last[point], point
        coalesced = sum(b.get("coalesced", 0) for b in mine)
        restatements = len(mine) + coalesced - changes[point]
        assert restatements >= 0 and all(b.get("coalesced", 0) >= 0 for b in mine)
        # A restatement (a record of a state already told) happens only when the changes cancel out.
        assert restatements <= sum(1 for b in mine if b.get("coalesced", 0))


def test_a_lagging_source_gives_one_record_per_window() -> None:
    """Timestamps 45 s behind the wall clock (inside the grace period) and 150 s behind (beyond
    it): flushed every 5 s by the wall clock, each window of each point is published once; the
    readings of a window already published are counted as late in the next one."""
    for lag_s, expect_late in ((45.0, False), (150.0, True)):
        pipeline = make_pipeline()
        records: list[NewRecord] = []
        readings = 0
        for wall in range(0, 3 * 3600, 5):
            now = T0 + wall
            jitter = 30.0 if expect_late and wall % 600 == 305 else 0.0
            records += pipeline.process([reading("power_w", M, 100.0, now - lag_s - jitter)])
            readings += 1
            records += pipeline.flush(now)
        records += pipeline.flush(force=True)
        telemetry = [b for b in bodies(records, "telemetry") if b["agg"] == "mean"]
        windows = Counter(b["window_start"] for b in telemetry)
        assert max(windows.values()) == 1, windows.most_common(3)
        assert sum(b["samples"] for b in telemetry) == readings  # none dropped
        late = sum(b.get("late", 0) for b in telemetry)
        assert (late > 0) == expect_late
        analytics = Counter(b["hour"] for b in bodies(records, "analytics"))
        assert max(analytics.values()) == 1


def test_availability_is_debounced() -> None:
    tracker = AvailabilityTracker(unavailable_after_s=60.0)
    p1 = ("smartmeter", "smartmeter")
    down = {p1: Down("waiting-for-port")}
    assert tracker.observe(0.0, down) == []
    assert tracker.observe(30.0, down) == []
    assert tracker.observe(35.0, {}) == []  # back before the threshold: nothing, ever
    assert tracker.observe(40.0, down) == []
    assert tracker.observe(99.0, down) == []  # 59 s without a break
    [gone] = tracker.observe(100.0, down)
    assert (gone.target, gone.available, gone.reason) == (p1, False, "waiting-for-port")
    assert tracker.observe(200.0, down) == []  # once
    [back] = tracker.observe(205.0, {})
    assert (back.target, back.available) == (p1, True)
    assert tracker.observe(210.0, {}) == []
    # A device known failing since before the tracker saw it; a device of a source that is down
    # as a whole is not back.
    tracker = AvailabilityTracker(unavailable_after_s=60.0, reported_unavailable=[("hp", "hp1")])
    assert tracker.observe(500.0, {("hp", "hp"): Down("restarting")}) == []
    [dev] = tracker.observe(505.0, {("hp", "hp2"): Down("no answer", since_s=400.0), ("hp", "hp1"): Down("x")})
    assert (dev.target, dev.available) == (("hp", "hp2"), False)
    back_again = tracker.observe(510.0, {})
    assert [(t.target, t.available) for t in back_again] == [(("hp", "hp1"), True), (("hp", "hp2"), True)]


def test_down_targets_from_the_views() -> None:
    assert down_targets(SourceView("p1", "running", {"port_state": "lost"})) == {("p1", "p1"): Down("waiting-for-port")}
    assert down_targets(SourceView("hp", "restarting")) == {("hp", "hp"): Down("restarting")}
    devices = {"hp1": {"failing_since_ts": 5.0}, "hp2": {"failing_since_ts": None}}
    view = SourceView("hp", "running", {"devices": devices})
    assert down_targets(view) == {("hp", "hp1"): Down("no answer", 5.0)}


def test_availability_records_go_through_the_ledger() -> None:
    pipeline = make_pipeline()
    gone = pipeline.availability("smartmeter", "smartmeter", "p1", False, T0, "waiting-for-port")
    assert [(r.stream, r.route) for r in gone] == [("service", "service/status")]
    assert bodies(gone)[0] == {
        "type": "status",
        "device": "smartmeter",
        "device_type": "p1",
        "point": "availability",
        "value": "unavailable",
        "text": "waiting-for-port",
        "at": "2024-06-01T00:00:00Z",
    }
    _commit(pipeline, gone)
    again = _restart(pipeline)
    assert again.ledger.told(("smartmeter", "smartmeter", "availability")) == "unavailable"
    assert again.availability("smartmeter", "smartmeter", "p1", False, T0 + 9, "waiting-for-port") == []
    back = again.availability("smartmeter", "smartmeter", "p1", True, T0 + 10)
    assert [b["value"] for b in bodies(back)] == ["available"]
