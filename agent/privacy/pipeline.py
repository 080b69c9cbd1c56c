"""Readings in, purpose-stream records out: route, minimise, aggregate, pseudonymise.

``Pipeline.process(readings)`` is synchronous and cheap: each reading is routed by its point
kind to the streams whose register entry takes it; faults and status changes become service
records at once; measurements and counters accumulate in memory in per-stream windows.
``Pipeline.flush(now_s)`` returns the records of the windows that have ended (``force=True``:
all open windows, at shutdown). A window that a later reading overtakes is closed by
``process`` itself. Records' payloads are ``agent.payloads.body_encoder.encode(body)``.

What never leaves: identifier readings (serials, equipment ids, MAC addresses, home ids) enter
no record; they only feed the analytics subject, a keyed pseudonym. Analytics records carry
no device name and no gateway id, a generalised region, and hour-granular windows.

Fault points hold the current code (0, "" or None: no fault). A change is reported at once on
the service stream: the new code as ``active``, a code that went away as ``active=False``.
Status points: every change (and the first value ever seen) is a service status record. What
was last published of each fault and status point is kept by a
:class:`~heatgate.agent.privacy.service_ledger.ServiceLedger` (persisted by the daemon), so that
a restart publishes only the difference, and a disk that refuses service records makes the
pipeline coalesce them (:meth:`Pipeline.flush` publishes what is owed).

Windows are published once. A window closes when a reading of a later window arrives, or when
the clock passes its end by the grace period (``late_grace_s``, at most a quarter of the
window). A reading whose window was already published goes into the point's current window
(the open one, else the one after the published) and is counted there as ``late``.
Counters aggregate to deltas: a decrease is a wrap (16 or 32 bits, integer values near the
top) or a reset (the counter started again from zero).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from heatgate.agent.config import GatewayConfig
from heatgate.agent.payloads import (
    AnalyticsBody,
    AuditBody,
    ConnectivityBody,
    FaultBody,
    StatusBody,
    TelemetryBody,
    body_encoder,
)
from heatgate.agent.privacy.policy import BODY_FIELDS, Policy, StreamPolicy
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.region import generalise_region
from heatgate.agent.privacy.service_ledger import Change, ServiceLedger
from heatgate.agent.privacy.state import PrivacyState
from heatgate.agent.privacy.windows import WindowClock
from heatgate.buffer.api import NewRecord
from heatgate.buffer.ids import new_id
from heatgate.drivers.reading import PointKind, Quality, Reading

__all__ = ["AVAILABILITY_POINT", "Pipeline", "counter_increment", "iso_utc"]

AVAILABILITY_POINT = "availability"
"""The status point of a source's or a device's availability (``available``/``unavailable``)."""

_MEASUREMENT = PointKind.MEASUREMENT
_COUNTER = PointKind.COUNTER
_STATUS = PointKind.STATUS
_FAULT = PointKind.FAULT
_IDENTIFIER = PointKind.IDENTIFIER
_OK = Quality.OK
_WRAPS = (1 << 16, 1 << 32)
_TOPIC_SAFE = re.compile(r"[^a-z0-9_-]+")


def iso_utc(ts: float) -> str:
    """``2024-05-01T13:00:00Z`` (whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def counter_increment(previous: float, current: float) -> float:
    """How far a counter moved from ``previous`` to ``current``: the difference, or across a
    16/32-bit wrap for integers near the top, or ``current`` after a reset to zero."""
    if current >= previous:
        return current - previous
    if isinstance(previous, int) and isinstance(current, int):
        for modulus in _WRAPS:
            if previous < modulus and previous >= modulus - modulus // 4 and current < modulus // 4:
                return current + modulus - previous
    return current


def _no_fault(value: object) -> bool:
    return value is None or value == 0 or value == "" or value == "0"


class _Acc:
    """One point's open window in one stream."""

    __slots__ = (
        "bad",
        "closed_end",
        "delta",
        "device",
        "device_type",
        "end",
        "hi",
        "kind",
        "last",
        "late",
        "lo",
        "n",
        "point",
        "prev",
        "source",
        "start",
        "total",
        "unit",
        "window_s",
    )

    def __init__(self, reading: Reading, start: float, end: float, window_s: int) -> None:
        self.source = reading.source
        self.device = reading.device
        self.device_type = reading.device_type
        self.point = reading.point
        self.unit = reading.unit
        self.kind = reading.kind
        self.start = start
        self.end = end
        self.window_s = window_s
        self.prev: Any = None
        self.closed_end = -math.inf
        """End of the last window published for this point (none yet: -inf)."""
        self.reset()

    def reset(self) -> None:
        self.n = 0
        self.bad = 0
        self.total = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.last: Any = None
        self.delta: float = 0
        self.late = 0

    def place(self, ts: float) -> float:
        """Where a reading of time ``ts`` goes: its own time, or for a reading whose window was
        already published (or that is older than the open window) the start of the point's
        current window (counted as late)."""
        if self.n or self.bad:
            if ts < self.start:
                self.late += 1
                return self.start
        elif ts < self.closed_end:
            self.late += 1
            return self.closed_end
        return ts


class _Stream:
    """A stream's register entry compiled for the hot path."""

    def __init__(self, index: int, name: str, policy: StreamPolicy, priority: int) -> None:
        self.index = index
        self.name = name
        self.policy = policy
        self.priority = priority
        self.aggs = {kind: tuple(policy.aggregation.for_kind(kind.value)) for kind in PointKind}
        self.digits = policy.precision_digits
        self.granularity_s = policy.time_granularity_s
        self.windows: dict[str, int] = {}
        allowed = set(policy.fields)
        self.dropped = BODY_FIELDS[name] - allowed
        self.routes: dict[str, str] = {}

    def route(self, **values: str) -> str:
        key = "/".join(values.values())
        found = self.routes.get(key)
        if found is None:
            safe = {k: _TOPIC_SAFE.sub("-", v.lower()).strip("-") or "unknown" for k, v in values.items()}
            found = self.policy.route.format(**safe) if safe else self.policy.route
            self.routes[key] = found
        return found


class Pipeline:
    """The privacy pipeline of one gateway. Not thread-safe: call it from the event loop."""

    def __init__(
        self,
        policy: Policy,
        *,
        gateway: GatewayConfig,
        keys: PseudonymKeys,
        state: PrivacyState,
        clock: Callable[[], float] = time.time,
        ledger: ServiceLedger | None = None,
        late_grace_s: float = 60.0,
    ) -> None:
        self.policy = policy
        self.keys = keys
        self.state = state
        self.ledger = ledger if ledger is not None else ServiceLedger()
        """The last published state of every fault and status point (the daemon persists it)."""
        self.late_grace_s = late_grace_s
        self._clock = clock
        self._gateway_region = gateway.region
        self.window_clock = WindowClock(gateway.timezone)
        self.region = generalise_region(gateway.region, policy.region)
        self._streams = {
            name: _Stream(index, name, stream, policy.priority(name))
            for index, (name, stream) in enumerate(policy.streams.items())
        }
        self._targets: dict[tuple[PointKind, str, str], tuple[_Stream, ...]] = {}
        self._accs: dict[tuple[int, str, str, str], _Acc] = {}
        self._fault_counts: dict[tuple[int, str, str, str, str, float], list[Any]] = {}
        self._fault_counts_closed: dict[tuple[int, str, str, str], float] = {}
        self._fault_now: dict[tuple[str, str, str], Any] = {}
        self._identifiers: dict[tuple[str, str], dict[str, str]] = {}
        self._iso: dict[float, str] = {}
        self._seen_version = -1
        self.counts = {"readings": 0, "late": 0, "dropped_objected": 0}

    # ---- the hot path -------------------------------------------------------------------------

    def process(self, readings: Sequence[Reading]) -> list[NewRecord]:
        """Route, minimise and pseudonymise ``readings``; return the records ready now
        (service records, and windows that a reading closed)."""
        if self.state.version != self._seen_version:
            self._resync()
        out: list[NewRecord] = []
        targets_cache = self._targets
        accs = self._accs
        bounds = self.window_clock.bounds
        for r in readings:
            kind = r.kind
            if kind is _IDENTIFIER:
                if r.value is not None and r.quality is _OK:
                    self._identifiers.setdefault((r.source, r.device), {})[r.point] = str(r.value)
                continue
            targets = targets_cache.get((kind, r.device_type, r.point))
            if targets is None:
                targets = self._compile_targets(kind, r.device_type, r.point)
            if kind is _FAULT:
                self._fault(r, targets, out)
                continue
            if kind is _STATUS:
                self._status(r, targets, out)
                continue
            value = r.value
            good = r.quality is _OK and value is not None and not isinstance(value, str)
            for stream in targets:
                window_s = stream.windows.get(r.device_type)
                if window_s is None:
                    window_s = self._window(stream, r.device_type)
                ts = r.ts
                key = (stream.index, r.source, r.device, r.point)
                acc = accs.get(key)
                if acc is None:
                    start, end = bounds(ts, window_s)
                    acc = accs[key] = _Acc(r, start, end, window_s)
                elif ts < acc.closed_end or not acc.start <= ts < acc.end or window_s != acc.window_s:
                    placed = acc.place(ts)
                    if placed != ts:
                        self.counts["late"] += 1
                        ts = placed
                    if not acc.start <= ts < acc.end or window_s != acc.window_s:
                        start, end = bounds(ts, window_s)
                        if acc.n or acc.bad:
                            out.extend(self._close(stream, acc))
                        acc.start = start
                        acc.end = end
                        acc.window_s = window_s
                if not good:
                    acc.bad += 1
                    continue
                acc.n += 1
                if kind is _COUNTER:
                    prev = acc.prev
                    if prev is not None:
                        acc.delta += counter_increment(prev, value)  # type: ignore[arg-type]
                    acc.prev = value
                else:
                    acc.total += value  # type: ignore[operator]
                    if value < acc.lo:  # type: ignore[operator]
                        acc.lo = value  # type: ignore[assignment]
                    if value > acc.hi:  # type: ignore[operator]
                        acc.hi = value  # type: ignore[assignment]
                acc.last = value
        self.counts["readings"] += len(readings)
        return out

    def _compile_targets(self, kind: PointKind, device_type: str, point: str) -> tuple[_Stream, ...]:
        objected = self.state.objected_streams()
        consents = self.state.consents_given()
        chosen = []
        for stream in self._streams.values():
            p = stream.policy
            if kind not in p.kinds or not stream.aggs[kind]:
                continue
            if stream.name in objected or (p.needs_consent and p.needs_consent not in consents):
                continue
            if self.policy.takes_device_type(stream.name, device_type) and p.takes_point(point):
                chosen.append(stream)
        result = tuple(chosen)
        self._targets[(kind, device_type, point)] = result
        return result

    def _window(self, stream: _Stream, device_type: str) -> int:
        window_s = self.policy.window_s(stream.name, device_type, self.state.consents_given())
        stream.windows[device_type] = window_s
        return window_s

    def _resync(self) -> None:
        """The customer's choices changed: recompile routes and windows, drop what is no longer
        allowed (an objected stream's open windows; finer windows whose consent was withdrawn)."""
        self._seen_version = self.state.version
        self._targets.clear()
        for stream in self._streams.values():
            stream.windows.clear()
        objected = self.state.objected_streams()
        consents = self.state.consents_given()
        by_index = {s.index: s for s in self._streams.values()}
        for key, acc in list(self._accs.items()):
            stream = by_index[key[0]]
            p = stream.policy
            if stream.name in objected or (p.needs_consent and p.needs_consent not in consents):
                del self._accs[key]
            elif acc.window_s < self.policy.window_s(stream.name, acc.device_type, consents):
                acc.reset()  # made under a consent now withdrawn: never sent
        for fault_key in list(self._fault_counts):
            if by_index[fault_key[0]].name in objected:
                del self._fault_counts[fault_key]

    def adopt_policy(self, policy: Policy) -> list[NewRecord]:
        """Switch to ``policy`` (a reload). Every open window is closed under the old policy and
        its records returned (commit them: nothing read is lost); what the sources last reported
        (fault and status values, identifiers) is kept, so nothing is announced twice."""
        closing = self.flush(force=True)
        self.policy = policy
        self.region = generalise_region(self._gateway_region, policy.region)
        self._streams = {
            name: _Stream(index, name, stream, policy.priority(name))
            for index, (name, stream) in enumerate(policy.streams.items())
        }
        self._targets.clear()
        self._accs.clear()
        self._fault_counts.clear()
        self._fault_counts_closed.clear()
        self._seen_version = -1
        return closing

    def drop_stream(self, stream: str) -> int:
        """Discard a stream's open windows (objection, erasure); returns how many."""
        index = self._streams[stream].index
        keys = [k for k in self._accs if k[0] == index]
        for key in keys:
            del self._accs[key]
        fault_keys = [k for k in self._fault_counts if k[0] == index]
        for fault_key in fault_keys:
            del self._fault_counts[fault_key]
        return len(keys) + len(fault_keys)

    # ---- faults and status ------------------------------------------------------------------

    def _fault(self, r: Reading, targets: tuple[_Stream, ...], out: list[NewRecord]) -> None:
        if r.quality is not _OK:
            return
        key = (r.source, r.device, r.point)
        change = self.ledger.observe(key, "fault", r.device_type, r.value, r.ts, r.text)
        if change is not None:
            self._publish(change, targets, out)
        # Fault counts (analytics) count every raise the agent sees, whatever the service stream does.
        previous = self._fault_now.get(key)
        current = r.value
        self._fault_now[key] = current
        if current == previous or _no_fault(current):
            return
        for stream in targets:
            if "count" not in stream.aggs[_FAULT]:
                continue
            window_s = stream.windows.get(r.device_type) or self._window(stream, r.device_type)
            start, end = self.window_clock.bounds(r.ts, window_s)
            closed_end = self._fault_counts_closed.get((stream.index, *key), -math.inf)
            if start < closed_end:  # that window was published: the current one takes it
                start, end = self.window_clock.bounds(closed_end, window_s)
                self.counts["late"] += 1
            ckey = (stream.index, r.source, r.device, r.point, str(current), start)
            entry = self._fault_counts.get(ckey)
            if entry is None:
                self._fault_counts[ckey] = [1, r.device_type, end]
            else:
                entry[0] += 1

    def _status(self, r: Reading, targets: tuple[_Stream, ...], out: list[NewRecord]) -> None:
        if r.quality is not _OK:
            return
        change = self.ledger.observe((r.source, r.device, r.point), "status", r.device_type, r.value, r.ts, r.text)
        if change is not None:
            self._publish(change, targets, out)
        for stream in targets:
            if "last" not in stream.aggs[_STATUS]:
                continue
            window_s = stream.windows.get(r.device_type) or self._window(stream, r.device_type)
            akey = (stream.index, r.source, r.device, r.point)
            acc = self._accs.get(akey)
            ts = r.ts
            if acc is None:
                start, end = self.window_clock.bounds(ts, window_s)
                acc = self._accs[akey] = _Acc(r, start, end, window_s)
            elif ts < acc.closed_end or not acc.start <= ts < acc.end or window_s != acc.window_s:
                ts = acc.place(ts)
                if not acc.start <= ts < acc.end or window_s != acc.window_s:
                    start, end = self.window_clock.bounds(ts, window_s)
                    if acc.n:
                        out.extend(self._close(stream, acc))
                    acc.start = start
                    acc.end = end
                    acc.window_s = window_s
            acc.n += 1
            acc.last = r.value

    def _publish(self, change: Change, targets: tuple[_Stream, ...], out: list[NewRecord]) -> None:
        """The records of a fault or status change, in every stream that takes changes; the
        ledger learns their ids."""
        _source, device, point = change.key
        kind = _FAULT if change.kind == "fault" else _STATUS
        made: list[NewRecord] = []
        for stream in targets:
            if "change" not in stream.aggs[kind]:
                continue
            made.extend(self._change_records(stream, change, device, point))
        self.ledger.sent(change, [r.id for r in made])
        out.extend(made)

    def _change_records(self, stream: _Stream, change: Change, device: str, point: str) -> list[NewRecord]:
        at = self._at(stream, change.ts)
        records = []
        for event in change.events:
            body: Any
            if change.kind == "fault":
                body = FaultBody(
                    device=device,
                    device_type=change.device_type,
                    point=point,
                    code=event.value,
                    text=change.text if event.active else None,
                    active=event.active,
                    coalesced=event.coalesced,
                    at=at,
                )
            else:
                body = StatusBody(
                    device=device,
                    device_type=change.device_type,
                    point=point,
                    value=event.value,
                    text=change.text,
                    coalesced=event.coalesced,
                    at=at,
                )
            records.append(self._record(stream, body, stream.route(kind=change.kind)))
        return records

    def owed(self) -> list[NewRecord]:
        """The records of the points whose records the buffer refused (disk pressure), coalesced
        to the difference between what the backend was told and what the devices read now."""
        out: list[NewRecord] = []
        if not self.ledger.owes():
            return out
        if self.state.version != self._seen_version:
            self._resync()
        for change in list(self.ledger.owed()):
            kind = _FAULT if change.kind == "fault" else _STATUS
            point = change.key[2]
            targets = self._targets.get((kind, change.device_type, point))
            if targets is None:
                targets = self._compile_targets(kind, change.device_type, point)
            self._publish(change, targets, out)
        return out

    def availability(
        self, source: str, device: str, device_type: str, available: bool, ts: float, reason: str | None = None
    ) -> list[NewRecord]:
        """A source or device stopped (or started again) answering: a service status record of
        the point ``availability`` (``unavailable``/``available``), kept in the ledger like any
        status point, so that a restart publishes only what changed."""
        out: list[NewRecord] = []
        change = self.ledger.observe(
            (source, device, AVAILABILITY_POINT),
            "status",
            device_type,
            "available" if available else "unavailable",
            ts,
            reason,
        )
        stream = self._streams.get("service")
        if change is None:
            return out
        if stream is None:
            self.ledger.sent(change, [])
            return out
        out = self._change_records(stream, change, device, AVAILABILITY_POINT)
        self.ledger.sent(change, [r.id for r in out])
        return out

    # ---- windows ------------------------------------------------------------------------------

    def flush(self, now_s: float | None = None, *, force: bool = False) -> list[NewRecord]:
        """Records of the windows that ended by ``now_s`` (default: the clock) more than their
        grace period ago; ``force``: of every open window (shutdown). Then what the ledger owes
        (service records a full disk refused, coalesced)."""
        if self.state.version != self._seen_version:
            self._resync()
        now = self._clock() if now_s is None else now_s
        out: list[NewRecord] = []
        by_index = {s.index: s for s in self._streams.values()}
        for acc_key, acc in list(self._accs.items()):
            if (acc.n or acc.bad) and (force or acc.end + self.grace_s(acc.end - acc.start) <= now):
                out.extend(self._close(by_index[acc_key[0]], acc))
        for ckey, (count, device_type, end) in list(self._fault_counts.items()):
            start = ckey[5]
            if force or end + self.grace_s(end - start) <= now:
                del self._fault_counts[ckey]
                closed_key = (ckey[0], ckey[1], ckey[2], ckey[3])
                self._fault_counts_closed[closed_key] = max(end, self._fault_counts_closed.get(closed_key, end))
                stream = by_index[ckey[0]]
                if stream.name == "analytics":
                    body: Any = AnalyticsBody(
                        subject=self._subject(ckey[1], ckey[2], start),
                        device_type=device_type,
                        region=self.region,
                        point=f"{ckey[3]}#{ckey[4]}",
                        agg="count",
                        value=count,
                        hour=self._iso_of(start),
                        samples=count,
                    )
                    out.append(self._record(stream, body, stream.route(device_type=device_type)))
                else:
                    body = TelemetryBody(
                        device=ckey[2],
                        device_type=device_type,
                        point=f"{ckey[3]}#{ckey[4]}",
                        agg="count",
                        value=count,
                        window_start=self._iso_of(start),
                        window_s=round(end - start),
                        samples=count,
                    )
                    out.append(self._record(stream, body, stream.route()))
        out.extend(self.owed())
        return out

    def grace_s(self, window_s: float) -> float:
        """How long after its end a window of ``window_s`` waits for late readings."""
        return min(self.late_grace_s, window_s / 4)

    def _close(self, stream: _Stream, acc: _Acc) -> list[NewRecord]:
        records: list[NewRecord] = []
        kind_aggs = stream.aggs[acc.kind]
        n = acc.n
        quality = "ok" if acc.bad == 0 else ("partial" if n else "bad")
        is_analytics = stream.name == "analytics"
        if is_analytics and n == 0:
            acc.reset()
            return records
        acc.closed_end = acc.end
        window_start = self._iso_of(acc.start)
        digits = stream.digits
        summary: dict[str, Any] = {}
        if acc.kind is _MEASUREMENT and n:
            summary = {"sum": _round(acc.total, digits), "min": _round(acc.lo, digits), "max": _round(acc.hi, digits)}
        for agg in kind_aggs:
            value: Any
            if n == 0:
                value = None
            elif agg == "mean":
                value = round(acc.total / n, digits)
            elif agg == "min":
                value = _round(acc.lo, digits)
            elif agg == "max":
                value = _round(acc.hi, digits)
            elif agg == "delta":
                value = _round(acc.delta, digits)
            else:  # last
                value = _round(acc.last, digits)
            if is_analytics:
                body: Any = AnalyticsBody(
                    subject=self._subject(acc.source, acc.device, acc.start),
                    device_type=acc.device_type,
                    region=self.region,
                    point=acc.point,
                    agg=agg,  # type: ignore[arg-type]
                    value=value,
                    hour=window_start,
                    samples=n,
                    late=acc.late,
                    **summary,
                )
                route = stream.route(device_type=acc.device_type)
            else:
                body = TelemetryBody(
                    device=acc.device,
                    device_type=acc.device_type,
                    point=acc.point,
                    unit=acc.unit,
                    agg=agg,  # type: ignore[arg-type]
                    value=value,
                    window_start=window_start,
                    window_s=round(acc.end - acc.start),
                    samples=n,
                    late=acc.late,
                    quality=quality,  # type: ignore[arg-type]
                    **summary,
                )
                route = stream.route()
            records.append(self._record(stream, body, route))
        acc.reset()
        return records

    def _subject(self, source: str, device: str, ts: float) -> str:
        identifiers = self._identifiers.get((source, device))
        value = "id:" + identifiers[min(identifiers)] if identifiers else f"dev:{source}/{device}"
        return self.keys.pseudonym("analytics", value, ts)

    # ---- records ----------------------------------------------------------------------------

    def _iso_of(self, start: float) -> str:
        found = self._iso.get(start)
        if found is None:
            if len(self._iso) > 4096:
                self._iso.clear()
            found = self._iso[start] = iso_utc(start)
        return found

    def _at(self, stream: _Stream, ts: float) -> str:
        return iso_utc(ts - ts % stream.granularity_s)

    def _record(self, stream: _Stream, body: Any, route: str) -> NewRecord:
        if stream.dropped:
            body = _drop_fields(body, stream.dropped)
        return NewRecord(
            id=new_id(),
            stream=stream.name,
            route=route,
            priority=stream.priority,
            created_s=self._clock(),
            payload=body_encoder.encode(body),
        )

    def audit(
        self,
        event: str,
        actor: str,
        outcome: str,
        *,
        reason: str | None = None,
        details: dict[str, str | int | float | bool | None] | None = None,
    ) -> NewRecord:
        """A security-stream record. Put no personal data in ``details``."""
        stream = self._streams["security"]
        body = AuditBody(
            event=event,
            actor=actor,
            outcome=outcome,  # type: ignore[arg-type]
            reason=reason,
            details=dict(details or {}),
            at=self._at(stream, self._clock()),
        )
        return self._record(stream, body, stream.route())

    def connectivity(self, event: str, target: str, reason: str | None = None) -> NewRecord:
        """A connectivity-stream record (``connected``, ``disconnected``, ``connect_failed``,
        ``source_up``, ``source_down``)."""
        stream = self._streams["connectivity"]
        body = ConnectivityBody(
            event=event,  # type: ignore[arg-type]
            target=target,
            reason=reason,
            at=self._at(stream, self._clock()),
        )
        return self._record(stream, body, stream.route())

    def describe(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "open_windows": len(self._accs) + len(self._fault_counts),
            **self.counts,
            "service_ledger": self.ledger.describe(),
        }


def _round(value: Any, digits: int) -> Any:
    if isinstance(value, float):
        return round(value, digits)
    return value


def _drop_fields(body: Any, dropped: frozenset[str] | set[str]) -> Any:
    changes: dict[str, Any] = {}
    for field in msgspec.structs.fields(type(body)):
        if field.encode_name in dropped:
            if field.default is not msgspec.NODEFAULT:
                changes[field.name] = field.default
            elif field.default_factory is not msgspec.NODEFAULT:
                changes[field.name] = field.default_factory()
            else:
                changes[field.name] = ""
    return msgspec.structs.replace(body, **changes) if changes else body
