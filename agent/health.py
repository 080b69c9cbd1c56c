"""The agent's health rules: what ``heatgate status`` and systemd's ``STATUS=`` call a problem.

Pure functions over a :class:`HealthSnapshot` that the daemon assembles: no clock, no I/O, so
each rule is tested on its own. A problem is one sentence an installer can act on, naming the
source, device or setting and the last error.

The rules:

- a source the supervisor is not running (``restarting``, ``ended``) is a problem, with its error;
- a serial source whose port is unavailable or lost shows ``waiting-for-port`` (not ``running``)
  and is a problem naming the port and the error;
- a Modbus device whose polls have failed in a row for ``device_failing_s`` or longer is a
  problem naming the device and its last error (a short hiccup is not);
- a Modbus point the device refuses (learned by the driver) is a problem naming the point and
  its registers; a fault or status point that cannot be read is an *alarm*: its faults would
  go unreported;
- messages arriving on topics the gateway does not serve at more than ``stray_per_min`` are a
  problem (another client publishing under its prefix, or a loop);
- the broker not connected, or not acknowledging: the oldest message has waited ``ack_stall_s``
  for its PUBACK, or the publisher dropped the connection for a missing PUBACK and none has come
  since (a quiet spell without messages is never a stall);
- records a full disk left in memory (or lost);
- a reload that was refused (the located error), or settings changed on disk that only a
  restart applies;
- each alarm of the buffer (corrupt file quarantined, evictions, a full disk) in ``heatgate status``.

``heatgate status`` shows each source through :func:`source_status`; systemd's ``STATUS=`` line
is :func:`health_line`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BrokerHealth",
    "CounterRate",
    "HealthLimits",
    "HealthSnapshot",
    "SourceCounters",
    "SourceView",
    "acknowledgement_stall_s",
    "broker_health",
    "buffer_problems",
    "failing_devices",
    "health_line",
    "problems",
    "source_error",
    "source_state",
    "source_status",
    "unreadable_problems",
]

WAITING_FOR_PORT = "waiting-for-port"
_PORT_DOWN = frozenset({"unavailable", "lost"})


@dataclass(frozen=True, slots=True)
class HealthLimits:
    device_failing_s: float = 60.0
    """A Modbus device failing in a row this long is a problem."""
    stray_per_min: float = 5.0
    """More stray messages than this per minute are a problem."""
    ack_stall_s: float = 30.0
    """A message waiting this long for its PUBACK means the broker is not acknowledging."""


@dataclass(frozen=True, slots=True)
class SourceView:
    """One source as the supervisor sees it (``slot_state``, ``last_error``) and as its driver
    reports itself (``health``, the driver's own JSON-able document)."""

    name: str
    slot_state: str
    health: Mapping[str, Any] = field(default_factory=dict)
    last_error: str | None = None


@dataclass(frozen=True, slots=True)
class HealthSnapshot:
    now_s: float
    """Wall-clock time of the snapshot (drivers report wall-clock timestamps)."""
    sources: tuple[SourceView, ...] = ()
    broker_connected: bool | None = None
    """None: no publisher (yet)."""
    inflight: int = 0
    ack_stall_s: float | None = None
    """Seconds the broker has kept messages waiting for their PUBACK, once past
    ``HealthLimits.ack_stall_s`` (:func:`acknowledgement_stall_s`)."""
    stray_per_min: float | None = None
    unstored: int = 0
    unstored_dropped: int = 0
    reload_error: str | None = None
    restart_needed: tuple[str, ...] = ()


def source_state(view: SourceView) -> str:
    """The state ``heatgate status`` shows: the supervisor's unless it runs the source, then the
    port's when the port is not open (``waiting-for-port``, or a driver's own such as
    ``no_controller``)."""
    if view.slot_state != "running":
        return view.slot_state
    port_state = view.health.get("port_state")
    if port_state in _PORT_DOWN:
        return WAITING_FOR_PORT
    if isinstance(port_state, str) and port_state not in ("open", "closed"):
        return port_state
    return "running"


def source_error(view: SourceView) -> str | None:
    """The error behind the source's state: the supervisor's (the source failed) or the port's."""
    if view.slot_state != "running":
        return view.last_error
    if view.health.get("port_state") in _PORT_DOWN:
        error = view.health.get("port_error")
        return str(error) if error else f"{view.health.get('port', 'port')} {view.health.get('port_state')}"
    return None


def failing_devices(health: Mapping[str, Any], now_s: float, limits: HealthLimits) -> list[tuple[str, float, str]]:
    """(device, seconds failing, last error) of each device failing in a row for at least
    ``limits.device_failing_s``."""
    found: list[tuple[str, float, str]] = []
    devices = health.get("devices")
    if not isinstance(devices, Mapping):
        return found
    for name, device in devices.items():
        if not isinstance(device, Mapping):
            continue
        since = device.get("failing_since_ts")
        if not isinstance(since, int | float):
            continue
        failing_s = now_s - since
        if failing_s >= limits.device_failing_s:
            found.append((str(name), failing_s, str(device.get("last_error") or "no answer")))
    return found


def unreadable_problems(source: str, health: Mapping[str, Any]) -> list[str]:
    """One sentence per device with points it cannot read; an alarm first for each fault or
    status point among them."""
    found: list[str] = []
    devices = health.get("devices")
    if not isinstance(devices, Mapping):
        return found
    for name, device in devices.items():
        entries = device.get("unreadable") if isinstance(device, Mapping) else None
        if not isinstance(entries, list) or not entries:
            continue
        plain: list[str] = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                continue
            what = f"{entry.get('point')} ({entry.get('registers')})"
            if entry.get("kind") in ("fault", "status"):
                found.append(
                    f"alarm: device {source}/{name} cannot read its {entry.get('kind')} point {what}: "
                    "its faults go unreported; correct the profile"
                )
            else:
                plain.append(what)
        if plain:
            found.append(
                f"device {source}/{name} cannot read {', '.join(plain)}: the device refuses them; correct the profile"
            )
    return found


def problems(snapshot: HealthSnapshot, limits: HealthLimits | None = None) -> list[str]:
    """Every problem in ``snapshot``, one sentence each; empty when healthy."""
    limits = limits or HealthLimits()
    found: list[str] = []
    for view in snapshot.sources:
        state = source_state(view)
        error = source_error(view)
        if view.slot_state != "running":
            found.append(f"source {view.name} {state}" + (f": {error}" if error else ""))
            continue
        if state == WAITING_FOR_PORT:
            found.append(f"source {view.name} waiting for its port: {error}")
        elif state != "running":
            found.append(f"source {view.name} {state}")
        for device, failing_s, last_error in failing_devices(view.health, snapshot.now_s, limits):
            found.append(f"device {view.name}/{device} failing for {failing_s:.0f} s: {last_error}")
        found.extend(unreadable_problems(view.name, view.health))
    if snapshot.unstored or snapshot.unstored_dropped:
        found.append(f"disk full: {snapshot.unstored} record(s) waiting in memory, {snapshot.unstored_dropped} lost")
    if snapshot.broker_connected is False:
        found.append("broker not connected")
    if snapshot.ack_stall_s is not None:
        found.append(
            f"broker not acknowledging: {snapshot.inflight} message(s) in flight, "
            f"no PUBACK for {snapshot.ack_stall_s:.0f} s"
        )
    if snapshot.stray_per_min is not None and snapshot.stray_per_min > limits.stray_per_min:
        found.append(
            f"{snapshot.stray_per_min:.0f} stray message(s)/min on topics the gateway does not serve "
            "(another client publishing under its prefix?)"
        )
    if snapshot.reload_error:
        found.append(f"reload refused, running on the previous settings: {snapshot.reload_error}")
    if snapshot.restart_needed:
        found.append("changed settings take effect only after a restart: " + ", ".join(snapshot.restart_needed))
    return found


def health_line(found: list[str], sources: int) -> str:
    """systemd's one-line ``STATUS=``: ``ok: N source(s)`` or ``degraded: `` and the problems."""
    return f"ok: {sources} source(s)" if not found else "degraded: " + "; ".join(found)


def buffer_problems(alarms: Iterable[str]) -> list[str]:
    """The buffer's alarms (``stats().alarms``) as problems."""
    return [f"buffer alarm: {alarm}" for alarm in alarms]


@dataclass(frozen=True, slots=True)
class BrokerHealth:
    connected: bool
    inflight: int
    ack_stall_s: float | None


def acknowledgement_stall_s(publisher_status: Mapping[str, Any], limits: HealthLimits | None = None) -> float | None:
    """Seconds the broker has kept messages waiting for their PUBACK (a broker that accepts the
    connection but never acknowledges), or None if it is fine. Once the publisher has dropped a
    connection for a missing PUBACK (``puback_timeouts_in_row``), the stall lasts until the next
    PUBACK (``since_last_ack_s``); before that it is the age of the oldest unacknowledged message
    once past ``limits.ack_stall_s`` (never the length of a quiet spell).

    ``publisher_status`` is :meth:`agent.publish.publisher.Publisher.status`."""
    limits = limits or HealthLimits()
    if publisher_status.get("puback_timeouts_in_row"):
        return float(publisher_status.get("since_last_ack_s") or 0.0)
    oldest_s = publisher_status.get("oldest_unacked_age_s")
    if isinstance(oldest_s, int | float) and oldest_s >= limits.ack_stall_s:
        return float(oldest_s)
    return None


def broker_health(publisher_status: Mapping[str, Any], limits: HealthLimits | None = None) -> BrokerHealth:
    """The broker's side of the snapshot, from the publisher's status document."""
    return BrokerHealth(
        connected=bool(publisher_status.get("connected")),
        inflight=int(publisher_status.get("inflight") or 0),
        ack_stall_s=acknowledgement_stall_s(publisher_status, limits),
    )


@dataclass(frozen=True, slots=True)
class SourceCounters:
    """What the supervisor counted of one source (for ``heatgate status``)."""

    type: str
    restarts: int = 0
    readings: int = 0
    last_reading_ts: float | None = None
    quality: Mapping[str, int] = field(default_factory=dict)
    since_first_reading_s: float | None = None
    """Seconds since the source delivered its first reading; None before."""


def source_status(view: SourceView, counters: SourceCounters) -> dict[str, Any]:
    """One source's document in ``heatgate status``: the driver's own health, with the state and
    error of :func:`source_state` / :func:`source_error` (else the supervisor's last error), and
    the supervisor's counters; ``readings_per_min`` once it has delivered (since its first reading,
    counted as at least a second)."""
    document = dict(view.health)
    document.setdefault("type", counters.type)
    document["state"] = source_state(view)
    document["restarts"] = counters.restarts
    document["readings"] = counters.readings
    document["last_reading_ts"] = counters.last_reading_ts
    document["quality"] = dict(counters.quality)
    if counters.since_first_reading_s is not None:
        minutes = max(counters.since_first_reading_s, 1.0) / 60
        document["readings_per_min"] = round(counters.readings / minutes, 1)
    error = source_error(view) or view.last_error
    if error:
        document["last_error"] = error
    return document


class CounterRate:
    """The rate of a growing counter over about the last ``window_s``, from samples taken
    whenever convenient (status queries, a periodic loop). A counter that goes down (reset)
    starts over."""

    def __init__(self, *, window_s: float = 60.0, min_span_s: float = 5.0) -> None:
        self.window_s = window_s
        self.min_span_s = min_span_s
        self._samples: deque[tuple[float, int]] = deque()

    def observe(self, now_s: float, count: int) -> None:
        samples = self._samples
        if samples and count < samples[-1][1]:
            samples.clear()
        if len(samples) >= 2 and now_s - samples[-2][0] < 1.0:
            samples[-1] = (now_s, count)  # samples at least a second apart: bounded
        else:
            samples.append((now_s, count))
        # Keep one sample at or before the window's start, so that the span covers the window.
        while len(samples) > 2 and samples[1][0] <= now_s - self.window_s:
            samples.popleft()

    def per_min(self) -> float | None:
        """Events per minute between the oldest and newest sample; None until they span
        ``min_span_s``."""
        if len(self._samples) < 2:
            return None
        (t0, c0), (t1, c1) = self._samples[0], self._samples[-1]
        span_s = t1 - t0
        if span_s < self.min_span_s:
            return None
        return (c1 - c0) * 60.0 / span_s
