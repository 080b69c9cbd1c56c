"""The health rules (agent/health.py), as pure functions over a snapshot."""

from __future__ import annotations

from typing import Any

from heatgate.agent.health import (
    CounterRate,
    HealthLimits,
    HealthSnapshot,
    SourceCounters,
    SourceView,
    acknowledgement_stall_s,
    broker_health,
    buffer_problems,
    failing_devices,
    health_line,
    problems,
    source_error,
    source_state,
    source_status,
)

NOW_S = 1_700_000_000.0
LIMITS = HealthLimits(device_failing_s=60.0, stray_per_min=5.0)


def _p1(port_state: str, port_error: str | None = None) -> SourceView:
    return SourceView(
        name="smartmeter",
        slot_state="running",
        health={"type": "p1", "port": "/dev/ttyUSB0", "port_state": port_state, "port_error": port_error},
    )


def _modbus(**device: Any) -> SourceView:
    return SourceView(name="heatpump", slot_state="running", health={"devices": {"hp1": device}})


def test_a_serial_source_whose_port_is_down_is_waiting_for_it_with_the_error() -> None:
    error = "cannot open /dev/ttyUSB0: [Errno 2] No such file or directory"
    for port_state in ("unavailable", "lost"):
        view = _p1(port_state, error)
        assert source_state(view) == "waiting-for-port"
        assert source_error(view) == error
        assert problems(HealthSnapshot(now_s=NOW_S, sources=(view,)), LIMITS) == [
            f"source smartmeter waiting for its port: {error}"
        ]
    # Without the driver's error the port and its state still say what is wrong.
    assert source_error(_p1("unavailable")) == "/dev/ttyUSB0 unavailable"


def test_an_open_port_is_running_and_healthy() -> None:
    view = _p1("open")
    assert source_state(view) == "running" and source_error(view) is None
    assert problems(HealthSnapshot(now_s=NOW_S, sources=(view,)), LIMITS) == []


def test_a_driver_state_of_its_own_is_shown_and_is_a_problem() -> None:
    view = SourceView(name="zwave", slot_state="running", health={"port_state": "no_controller"})
    assert source_state(view) == "no_controller"
    assert problems(HealthSnapshot(now_s=NOW_S, sources=(view,)), LIMITS) == ["source zwave no_controller"]


def test_the_supervisor_state_wins_over_the_port() -> None:
    view = SourceView(
        name="smartmeter",
        slot_state="restarting",
        health={"port_state": "unavailable"},
        last_error="PortUnavailable: boom",
    )
    assert source_state(view) == "restarting"
    assert problems(HealthSnapshot(now_s=NOW_S, sources=(view,)), LIMITS) == [
        "source smartmeter restarting: PortUnavailable: boom"
    ]


def test_a_modbus_device_failing_past_the_limit_is_a_problem_naming_it_and_its_error() -> None:
    failing = _modbus(state="backing_off", failing_since_ts=NOW_S - 95, last_error="no answer within 1.0 s")
    assert failing_devices(failing.health, NOW_S, LIMITS) == [("hp1", 95.0, "no answer within 1.0 s")]
    assert problems(HealthSnapshot(now_s=NOW_S, sources=(failing,)), LIMITS) == [
        "device heatpump/hp1 failing for 95 s: no answer within 1.0 s"
    ]
    assert source_state(failing) == "running"  # the bus runs; the device is the problem


def test_a_short_hiccup_or_an_answering_device_is_not_a_problem() -> None:
    hiccup = _modbus(state="backing_off", failing_since_ts=NOW_S - 59, last_error="no answer within 1.0 s")
    answering = _modbus(state="ok", failing_since_ts=None, last_error="no answer within 1.0 s")
    for view in (hiccup, answering):
        assert problems(HealthSnapshot(now_s=NOW_S, sources=(view,)), LIMITS) == []


def test_stray_messages_above_the_limit_are_a_problem() -> None:
    assert problems(HealthSnapshot(now_s=NOW_S, stray_per_min=5.0), LIMITS) == []
    assert problems(HealthSnapshot(now_s=NOW_S, stray_per_min=None), LIMITS) == []
    found = problems(HealthSnapshot(now_s=NOW_S, stray_per_min=60.0), LIMITS)
    assert len(found) == 1 and found[0].startswith("60 stray message(s)/min")


def test_broker_disk_and_reload_problems() -> None:
    snapshot = HealthSnapshot(
        now_s=NOW_S,
        broker_connected=False,
        inflight=3,
        ack_stall_s=31.0,
        unstored=2,
        reload_error="/etc/heatgate/privacy.toml: bogus: unknown field",
        restart_needed=("mqtt", "sources"),
    )
    assert problems(snapshot, LIMITS) == [
        "disk full: 2 record(s) waiting in memory, 0 lost",
        "broker not connected",
        "broker not acknowledging: 3 message(s) in flight, no PUBACK for 31 s",
        "reload refused, running on the previous settings: /etc/heatgate/privacy.toml: bogus: unknown field",
        "changed settings take effect only after a restart: mqtt, sources",
    ]
    assert problems(HealthSnapshot(now_s=NOW_S, broker_connected=True), LIMITS) == []
    assert problems(HealthSnapshot(now_s=NOW_S, broker_connected=None), LIMITS) == []


def test_counter_rate_over_the_window() -> None:
    rate = CounterRate(window_s=60.0, min_span_s=5.0)
    rate.observe(0.0, 100)
    assert rate.per_min() is None
    rate.observe(2.0, 110)
    assert rate.per_min() is None  # too short a span to tell
    rate.observe(10.0, 120)
    assert rate.per_min() == 120.0  # 20 in 10 s
    for t in range(11, 200):  # a quiet spell: the old burst leaves the window
        rate.observe(float(t), 120)
    assert rate.per_min() == 0.0
    assert len(rate._samples) <= 62  # bounded by the window, one sample a second


def test_counter_rate_many_samples_a_second_stay_bounded_and_exact() -> None:
    rate = CounterRate(window_s=60.0, min_span_s=5.0)
    for i in range(10_000):  # 100 observations a second for 100 s, 1 event each
        rate.observe(i / 100, i)
    assert len(rate._samples) <= 62
    per_min = rate.per_min()
    assert per_min is not None and abs(per_min - 6000.0) < 1.0


def test_a_counter_that_goes_down_starts_over() -> None:
    rate = CounterRate(window_s=60.0, min_span_s=5.0)
    rate.observe(0.0, 1000)
    rate.observe(10.0, 5)  # the publisher was rebuilt
    assert rate.per_min() is None
    rate.observe(20.0, 15)
    assert rate.per_min() == 60.0


def test_a_broker_that_stops_acknowledging_is_a_problem_and_a_quiet_spell_is_not() -> None:
    limits = HealthLimits(ack_stall_s=30.0)

    def stall(status: dict[str, Any]) -> float | None:
        return acknowledgement_stall_s(status, limits)

    # A quiet spell of 10 minutes, then a message sent 0.2 s ago: waiting, not stalled.
    assert stall({"connected": True, "inflight": 1, "oldest_unacked_age_s": 0.2, "since_last_ack_s": 600.0}) is None
    assert stall({"connected": True, "inflight": 0, "oldest_unacked_age_s": None, "since_last_ack_s": 600.0}) is None
    # The oldest message has waited past the limit: stalled by its age.
    assert stall({"inflight": 3, "oldest_unacked_age_s": 29.9, "since_last_ack_s": 900.0}) is None
    assert stall({"inflight": 3, "oldest_unacked_age_s": 31.0, "since_last_ack_s": 900.0}) == 31.0
    # The publisher dropped the connection for a missing PUBACK and has reconnected (ages restart):
    # still stalled, for as long as no PUBACK has come.
    dropped = {"inflight": 3, "oldest_unacked_age_s": 1.0, "since_last_ack_s": 95.0, "puback_timeouts_in_row": 2}
    assert stall(dropped) == 95.0
    assert stall({**dropped, "puback_timeouts_in_row": 0}) is None  # a PUBACK came
    # The limit is the daemon's default unless given.
    assert acknowledgement_stall_s({"oldest_unacked_age_s": HealthLimits().ack_stall_s}) == HealthLimits().ack_stall_s


def test_the_broker_side_of_the_snapshot_comes_from_the_publishers_status() -> None:
    stalled = broker_health({"connected": True, "inflight": 4, "oldest_unacked_age_s": 45.0}, LIMITS)
    assert (stalled.connected, stalled.inflight, stalled.ack_stall_s) == (True, 4, 45.0)
    down = broker_health({"connected": False, "inflight": None}, LIMITS)
    assert (down.connected, down.inflight, down.ack_stall_s) == (False, 0, None)
    snapshot = HealthSnapshot(
        now_s=NOW_S, broker_connected=stalled.connected, inflight=stalled.inflight, ack_stall_s=stalled.ack_stall_s
    )
    assert problems(snapshot, LIMITS) == ["broker not acknowledging: 4 message(s) in flight, no PUBACK for 45 s"]


def test_a_sources_status_document() -> None:
    view = _p1("lost", "read failed: device disconnected")
    counters = SourceCounters(
        type="p1", restarts=2, readings=30, last_reading_ts=NOW_S, quality={"ok": 30}, since_first_reading_s=120.0
    )
    document = source_status(view, counters)
    assert document["state"] == "waiting-for-port"
    assert document["last_error"] == "read failed: device disconnected"
    assert document["type"] == "p1" and document["port"] == "/dev/ttyUSB0"  # the driver's own fields stay
    assert (document["restarts"], document["readings"], document["quality"]) == (2, 30, {"ok": 30})
    assert document["readings_per_min"] == 15.0
    # Before its first reading there is no rate; a running source has no error; the driver's
    # type wins over the supervisor's.
    quiet = source_status(
        SourceView(name="hp", slot_state="running", health={"type": "modbus-tcp"}), SourceCounters("x")
    )
    assert "readings_per_min" not in quiet and "last_error" not in quiet
    assert quiet["type"] == "modbus-tcp" and quiet["state"] == "running"
    # A source the supervisor restarts shows the supervisor's error; the rate counts at least a second.
    failed = SourceView(name="hp", slot_state="restarting", last_error="ModbusCommError: refused")
    document = source_status(failed, SourceCounters("modbus-tcp", readings=3, since_first_reading_s=0.01))
    assert document["last_error"] == "ModbusCommError: refused" and document["readings_per_min"] == 180.0


def test_the_status_line_and_the_buffers_alarms() -> None:
    assert health_line([], 3) == "ok: 3 source(s)"
    assert health_line(["broker not connected", "source p1 ended"], 3) == (
        "degraded: broker not connected; source p1 ended"
    )
    assert buffer_problems(["corrupt database quarantined"]) == ["buffer alarm: corrupt database quarantined"]
    assert buffer_problems([]) == []
