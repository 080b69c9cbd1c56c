"""Routing, windows, aggregation, counters, faults and status, consent and objection in the pipeline."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.agent.privacy.pipeline import counter_increment
from heatgate.drivers.reading import PointKind, Quality
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState
from tests.support.privacy import DAY_S, T0, bodies, make_pipeline, reading

M, C, S, F, ID = PointKind.MEASUREMENT, PointKind.COUNTER, PointKind.STATUS, PointKind.FAULT, PointKind.IDENTIFIER


def test_measurement_window_mean_min_max_and_precision() -> None:
    pipeline = make_pipeline()
    values = [20.12345, 21.5, 19.0]
    records = pipeline.process([reading("flow_temp_c", M, v, T0 + 10 * i, unit="°C") for i, v in enumerate(values)])
    assert records == []  # nothing before the window ends
    assert pipeline.flush(T0 + 299) == []
    assert pipeline.flush(T0 + 359) == []  # the grace period for late readings (60 s)
    out = pipeline.flush(T0 + 360)
    telemetry = {b["agg"]: b for b in bodies(out, "telemetry")}
    assert telemetry["mean"]["value"] == round(sum(values) / 3, 3)
    assert telemetry["min"]["value"] == 19.0 and telemetry["max"]["value"] == 21.5
    assert telemetry["mean"]["window_start"] == "2024-06-01T00:00:00Z" and telemetry["mean"]["window_s"] == 300
    assert telemetry["mean"]["samples"] == 3 and telemetry["mean"]["unit"] == "°C"
    assert pipeline.flush(T0 + 3660)[0].stream == "analytics"  # the hour closes later
    assert pipeline.flush(force=True) == []


def test_a_later_reading_closes_the_window_and_late_ones_join_the_current_one() -> None:
    """A window is published once: a reading for a published window is aggregated into the
    point's current window and counted there as late (before: it was dropped)."""
    pipeline = make_pipeline()
    pipeline.process([reading("power_w", M, 100, T0 + 1)])
    out = pipeline.process([reading("power_w", M, 300, T0 + 301)])
    assert [b["value"] for b in bodies(out, "telemetry")] == [100, 100, 100]
    assert pipeline.process([reading("power_w", M, 999, T0 + 2)]) == []
    assert pipeline.counts["late"] == 1  # too late for telemetry's closed window...
    rest = pipeline.flush(force=True)
    means = [b for b in bodies(rest, "telemetry") if b["agg"] == "mean"]
    assert [(b["window_start"], b["value"], b["samples"], b["late"]) for b in means] == [
        ("2024-06-01T00:05:00Z", (300 + 999) / 2, 2, 1)
    ]
    analytics = bodies(rest, "analytics")
    assert [b["value"] for b in analytics] == [round((100 + 300 + 999) / 3, 1)]  # ...not the hour
    assert "late" not in analytics[0]


def test_bad_quality_is_counted_not_averaged() -> None:
    pipeline = make_pipeline()
    pipeline.process(
        [
            reading("power_w", M, 10.0, T0),
            reading("power_w", M, None, T0 + 1, quality=Quality.COMM_ERROR),
            reading("humidity_pct", M, None, T0 + 2, quality=Quality.COMM_ERROR),
        ]
    )
    out = bodies(pipeline.flush(force=True), "telemetry")
    power = next(b for b in out if b["point"] == "power_w" and b["agg"] == "mean")
    assert power["value"] == 10.0 and power["quality"] == "partial" and power["samples"] == 1
    humidity = next(b for b in out if b["point"] == "humidity_pct")
    assert humidity["value"] is None and humidity["quality"] == "bad"


def test_counter_delta_across_wrap_and_reset() -> None:
    assert counter_increment(65530, 4) == 10  # 16-bit wrap
    assert counter_increment(4294967290, 5) == 11  # 32-bit wrap
    assert counter_increment(1000, 5) == 5  # reset: counts from zero again
    assert counter_increment(40000.0, 0.5) == 0.5  # a float kWh register resets, never wraps
    pipeline = make_pipeline()
    values = [65500, 65530, 4, 20]
    pipeline.process([reading("starts", C, v, T0 + 10 * i) for i, v in enumerate(values)])
    out = {b["agg"]: b["value"] for b in bodies(pipeline.flush(force=True), "telemetry")}
    assert out == {"delta": 30 + 10 + 16, "last": 20}


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 65535), st.lists(st.integers(0, 5000), min_size=1, max_size=60), st.integers(30, 400))
def test_counter_deltas_sum_to_the_true_increase_across_windows(start: int, steps: list[int], step_s: int) -> None:
    """A 16-bit counter that wraps: the sum of the window deltas equals what it really counted."""
    pipeline = make_pipeline()
    value, records = start, []
    records += pipeline.process([reading("starts", C, value, T0)])
    for index, step in enumerate(steps, start=1):
        value = (value + step) % 65536
        records += pipeline.process([reading("starts", C, value, T0 + index * step_s)])
    records += pipeline.flush(force=True)
    deltas = [b["value"] for b in bodies(records, "telemetry") if b["agg"] == "delta"]
    assert sum(deltas) == sum(steps)
    windows = [b["window_start"] for b in bodies(records, "telemetry") if b["agg"] == "delta"]
    assert windows == sorted(set(windows))


def test_smart_meter_is_daily_by_default_and_15_minutes_with_consent() -> None:
    store = MemoryState()
    pipeline = make_pipeline(store=store)
    meter = {"device": "p1", "source": "smartmeter", "device_type": "smart-meter"}
    readings = [reading("energy_kwh", C, 1000.0 + i, T0 + 900 * i, **meter) for i in range(8)]  # type: ignore[arg-type]
    assert pipeline.process(readings) == []
    # The Dutch calendar day (CEST, UTC+2 in June): 2024-06-01 runs from 22:00Z to 22:00Z.
    local_day_end = T0 + DAY_S - 2 * 3600
    assert pipeline.flush(local_day_end + 59) == []  # the end of the day and its grace period
    daily = bodies(pipeline.flush(local_day_end + 60), "telemetry")
    assert {b["window_s"] for b in daily} == {86400} and daily[0]["window_start"] == "2024-05-31T22:00:00Z"
    assert [b["value"] for b in daily if b["agg"] == "delta"] == [7.0]
    assert not any(r.stream == "analytics" for r in pipeline.flush(force=True))  # smart meter: not analytics

    run_async(pipeline.state.consent("p1-15min", "test"))
    t1 = T0 + DAY_S
    out = pipeline.process(
        [
            reading("energy_kwh", C, 2000.0 + i, t1 + 900 * i, **meter)  # type: ignore[arg-type]
            for i in range(3)
        ]
    )
    out += pipeline.flush(t1 + 3 * 900 + 60)
    fine = [b for b in bodies(out, "telemetry") if b["agg"] == "delta"]
    assert [b["window_s"] for b in fine] == [900, 900, 900]
    assert fine[0]["window_start"] == "2024-06-02T00:00:00Z"

    # Withdrawal: what was gathered at 15 minutes and not yet sent is never sent.
    pipeline.process([reading("energy_kwh", C, 2100.0, t1 + 3 * 900 + 5, **meter)])  # type: ignore[arg-type]
    run_async(pipeline.state.withdraw_consent("p1-15min", "test"))
    assert [b for b in bodies(pipeline.flush(force=True), "telemetry") if b["window_s"] == 900] == []


def test_faults_go_to_service_at_once_with_clear_and_change() -> None:
    pipeline = make_pipeline()
    out = pipeline.process([reading("fault_code", F, 0, T0), reading("fault_code", F, 12, T0 + 1.7, text="HP")])
    assert [(r.stream, r.route, r.priority) for r in out] == [("service", "service/fault", 0)]
    assert bodies(out)[0] == {
        "type": "fault",
        "device": "hp1",
        "device_type": "heat-pump",
        "point": "fault_code",
        "code": 12,
        "text": "HP",
        "at": "2024-06-01T00:00:01Z",
    }
    assert pipeline.process([reading("fault_code", F, 12, T0 + 2)]) == []  # same code: nothing new
    changed = bodies(pipeline.process([reading("fault_code", F, 7, T0 + 3)]))
    assert [(b["code"], b.get("active", True)) for b in changed] == [(12, False), (7, True)]
    cleared = bodies(pipeline.process([reading("fault_code", F, 0, T0 + 4)]))
    assert [(b["code"], b.get("active", True)) for b in cleared] == [(7, False)]
    counts = [b for b in bodies(pipeline.flush(force=True), "analytics")]
    assert sorted((b["point"], b["value"], b["agg"]) for b in counts) == [
        ("fault_code#12", 1, "count"),
        ("fault_code#7", 1, "count"),
    ]


def test_status_changes_only() -> None:
    pipeline = make_pipeline()
    values = ["idle", "idle", "heating", "heating", "idle"]
    out = pipeline.process([reading("mode", S, v, T0 + i) for i, v in enumerate(values)])
    assert [(r.route, b["value"]) for r, b in zip(out, bodies(out), strict=True)] == [
        ("service/status", "idle"),
        ("service/status", "heating"),
        ("service/status", "idle"),
    ]


def test_objection_stops_intake_at_once_and_drops_open_windows() -> None:
    pipeline = make_pipeline()
    pipeline.process([reading("power_w", M, 1.0, T0)])
    run_async(pipeline.state.object("analytics", "test"))
    pipeline.process([reading("power_w", M, 2.0, T0 + 1), reading("fault_code", F, 5, T0 + 2)])
    out = pipeline.flush(force=True)
    assert {r.stream for r in out} == {"telemetry"}
    run_async(pipeline.state.withdraw_objection("analytics", "test"))
    pipeline.process([reading("power_w", M, 3.0, T0 + 3)])
    assert {r.stream for r in pipeline.flush(force=True)} == {"telemetry", "analytics"}


def test_analytics_subject_is_the_keyed_pseudonym_of_the_identifier() -> None:
    store = MemoryState()
    pipeline = make_pipeline(store=store)
    pipeline.process([reading("serial_number", ID, "SN0001", T0), reading("power_w", M, 1.0, T0)])
    first = bodies(pipeline.flush(force=True), "analytics")[0]["subject"]
    assert first == pipeline.keys.pseudonym("analytics", "id:SN0001", T0)
    other = make_pipeline()  # another device's keys: another pseudonym for the same serial
    other.process([reading("serial_number", ID, "SN0001", T0), reading("power_w", M, 1.0, T0)])
    assert bodies(other.flush(force=True), "analytics")[0]["subject"] != first
    assert len(first) == 26 and first == first.lower()


def test_audit_and_connectivity_records() -> None:
    pipeline = make_pipeline()
    audit = pipeline.audit("privacy.object", "local-cli", "done", details={"subject": "analytics"})
    assert (audit.stream, audit.route, audit.priority) == ("security", "security/audit", 1)
    assert bodies([audit])[0]["details"] == {"subject": "analytics"}
    link = pipeline.connectivity("connected", "broker")
    assert (link.stream, link.route) == ("connectivity", "connectivity") and len(link.id) == 26
