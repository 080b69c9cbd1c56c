"""Daily windows are the household's calendar days (gateway.timezone, default Europe/Amsterdam),
23 and 25 hours long when the clocks change; aggregates carry what merging them needs."""

from __future__ import annotations

import datetime as dt
import math
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.agent.config import GatewayConfig
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.state import PrivacyState
from heatgate.agent.privacy.windows import DAY_S, WindowClock
from heatgate.buffer.api import NewRecord
from heatgate.drivers.reading import PointKind
from heatgate.typedload import ConfigError, convert
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState
from tests.support.privacy import T0, bodies, make_pipeline, reading, shipped_policy

AMS = ZoneInfo("Europe/Amsterdam")
M, C = PointKind.MEASUREMENT, PointKind.COUNTER
METER = {"device": "meter", "source": "p1", "device_type": "smart-meter"}


def _utc(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


@pytest.mark.parametrize(
    ("inside", "start", "hours"),
    [
        ("2024-03-31T12:00:00", "2024-03-30T23:00:00", 23),  # clocks forward: 23 hours
        ("2024-10-27T12:00:00", "2024-10-26T22:00:00", 25),  # clocks back: 25 hours
        ("2024-06-01T21:59:59", "2024-05-31T22:00:00", 24),  # summer: UTC+2
        ("2024-12-31T23:30:00", "2024-12-31T23:00:00", 24),  # already 1 January in Amsterdam
    ],
)
def test_a_day_is_the_local_calendar_day(inside: str, start: str, hours: int) -> None:
    clock = WindowClock("Europe/Amsterdam")
    begin, end = clock.bounds(_utc(inside), DAY_S)
    assert begin == _utc(start) and end - begin == hours * 3600
    assert clock.bounds(end, DAY_S)[0] == end  # the next day starts where this one ends
    quarter = _utc(inside) - _utc(inside) % 900
    assert clock.bounds(_utc(inside), 900) == (quarter, quarter + 900)  # shorter windows: as before


@settings(max_examples=200, deadline=None)
@given(st.floats(0, 4e9, allow_nan=False), st.sampled_from(["Europe/Amsterdam", "UTC", "America/New_York"]))
def test_every_instant_falls_in_a_day_that_starts_at_local_midnight(ts: float, zone: str) -> None:
    begin, end = WindowClock(zone).bounds(ts, DAY_S)
    assert begin <= ts < end and 23 * 3600 <= end - begin <= 25 * 3600
    local = dt.datetime.fromtimestamp(begin, ZoneInfo(zone))
    assert (local.hour, local.minute, local.second) == (0, 0, 0)


def _daily(day_start: str, hours: int) -> list[dict[str, object]]:
    """A smart meter counting 1 kWh per quarter-hour from the local day before to the day after."""
    pipeline = make_pipeline()
    first = _utc(day_start) - DAY_S
    count = int((2 * DAY_S + hours * 3600) // 900)
    readings = [reading("energy_kwh", C, float(i), first + 900 * i, **METER) for i in range(count)]  # type: ignore[arg-type]
    records = pipeline.process(readings)
    records += pipeline.flush(force=True)
    return [b for b in bodies(records, "telemetry") if b["agg"] == "delta"]


@pytest.mark.parametrize(("day_start", "hours"), [("2024-03-30T23:00:00", 23), ("2024-10-26T22:00:00", 25)])
def test_the_daily_smart_meter_value_covers_the_dutch_day_across_dst(day_start: str, hours: int) -> None:
    days = {b["window_start"]: b for b in _daily(day_start, hours)}
    day = days[day_start + "Z"]
    assert day["window_s"] == hours * 3600
    assert day["value"] == hours * 4  # every quarter-hour of the local day, no more, no less
    assert day["samples"] == hours * 4


def test_the_time_zone_is_configurable_and_checked() -> None:
    pipeline = make_pipeline()
    assert pipeline.window_clock.timezone == "Europe/Amsterdam"
    utc = Pipeline(
        shipped_policy(),
        gateway=GatewayConfig(id="gw-utc-0001", region="NL-UT", timezone="UTC"),
        keys=run_async(PseudonymKeys.load(MemoryState(), clock=lambda: T0)),
        state=run_async(PrivacyState.load(MemoryState(), clock=lambda: T0)),
        clock=lambda: T0,
    )
    assert utc.window_clock.bounds(T0 + 5, DAY_S) == (T0, T0 + DAY_S)
    with pytest.raises(ConfigError) as info:
        convert({"id": "gw-1234", "region": "NL-UT", "timezone": "Europe/Atlantis"}, GatewayConfig)
    assert [issue.path for issue in info.value.issues] == ["timezone"]


# ---- merging aggregates across a restart --------------------------------------------------------


def _run(store: MemoryState, values: list[float], offset_s: float) -> list[NewRecord]:
    """One agent run: the readings, then a shutdown (every open window closed)."""
    pipeline = make_pipeline(store=store)
    pipeline.process([reading("flow_temp_c", M, v, T0 + offset_s + 7 * i) for i, v in enumerate(values)])
    return pipeline.flush(force=True)


def _merge(parts: list[dict[str, float]]) -> dict[str, float]:
    n = sum(p["samples"] for p in parts)
    total = sum(p["sum"] for p in parts)
    return {"samples": n, "mean": total / n, "min": min(p["min"] for p in parts), "max": max(p["max"] for p in parts)}


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.floats(-20, 90, allow_nan=False), min_size=1, max_size=30),
    st.lists(st.floats(-20, 90, allow_nan=False), min_size=1, max_size=30),
)
def test_records_of_one_window_from_two_runs_merge_to_the_one_run_result(
    before: list[float], after: list[float]
) -> None:
    store = MemoryState()  # the same device: the same pseudonym keys in both runs
    records = _run(store, before, 0) + _run(store, after, 250)  # both within one hour
    analytics = [b for b in bodies(records, "analytics") if b["point"] == "flow_temp_c"]
    assert len(analytics) == 2 and analytics[0]["subject"] == analytics[1]["subject"]
    assert analytics[0]["hour"] == analytics[1]["hour"]
    merged = _merge(analytics)
    everything = before + after
    assert merged["samples"] == len(everything)
    # Each run's sum is rounded to the stream's precision (0.1): the merged mean is within 0.1/n.
    assert math.isclose(merged["mean"], sum(everything) / len(everything), abs_tol=0.1 / len(everything) + 1e-9)
    assert merged["min"] == round(min(everything), 1) and merged["max"] == round(max(everything), 1)
    telemetry = bodies(records, "telemetry")
    assert telemetry and all({"samples", "sum", "min", "max"} <= set(b) for b in telemetry)
