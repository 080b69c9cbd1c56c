"""The backend's picture of every fault and status point, kept true across restarts and disk pressure.

A *point* is (source, device, point name). For each one the ledger knows:

- ``told``: the state that committed records have told the backend. It is persisted (sealed, as
  one JSON document under :data:`LEDGER_KEY` of the buffer's state), so that it survives a
  restart and a ``kill -9``;
- the records handed to the buffer and not yet known to be stored (*in flight*);
- ``now``: what the device last read, in memory.

A fault point's state is its active code, or None (no fault: 0, "" or None read). A status
point's state is its value. Changes are published as the difference between what the backend
will have once the records in flight are stored and what the device reads: a clear of the old
code and a raise of the new one; a status point's new value.

**After a restart** the first good reading of each point is compared with ``told``: a clear for
what is gone, a raise for what is new, nothing for what is unchanged. A device that does not
answer gives no good reading, so it clears nothing. The daemon saves the ledger before it
commits the records made from it, marking the points with records in flight *uncertain*; a point
that was uncertain at start is restated on its first reading (the last records may or may not
have been committed), and saved again after the commit.

**Under disk pressure** the buffer refuses service records rather than evicting other points'
latest state (:func:`heatgate.buffer.eviction.plan_eviction`, rule 4). A refused record makes
its point *owed*: it is taken back (:meth:`ServiceLedger.settle`), later changes of the point are
folded (counted, not published one by one), and :meth:`ServiceLedger.owed` publishes the
difference between ``told`` and ``now`` (restating ``now`` if there is none) with ``coalesced``:
the changes folded into it. Over a point's records, their number plus their ``coalesced`` is the
number of changes the agent saw. The service stream loses history, never the latest state.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from heatgate.agent.privacy.errors import PrivacyStateError

__all__ = ["LEDGER_KEY", "Change", "Event", "PointKey", "ServiceLedger", "no_fault"]

LEDGER_KEY = "service.ledger"
_FORMAT = 1

PointKey = tuple[str, str, str]
"""(source, device, point)."""
Kind = Literal["fault", "status"]


class _Unknown:
    """The backend was never told anything of this status point."""

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN: Any = _Unknown()


def no_fault(value: object) -> bool:
    """A fault point reading that means "no fault"."""
    return value is None or value == 0 or value == "" or value == "0"


@dataclass(frozen=True, slots=True)
class Event:
    """One record to publish: a fault ``code`` raised (``active``) or cleared; a status ``value``."""

    value: Any
    active: bool = True
    coalesced: int = 0


@dataclass(frozen=True, slots=True)
class Change:
    """What to publish for one point now: its events, in order; ``state`` is the point's state
    once they are stored. Hand the ids of the records made from it to :meth:`ServiceLedger.sent`."""

    key: PointKey
    kind: Kind
    device_type: str
    events: tuple[Event, ...]
    state: Any
    text: str | None
    ts: float

    @property
    def carried(self) -> int:
        """The changes these records stand for (their number plus what they coalesce)."""
        return sum(1 + e.coalesced for e in self.events)


@dataclass(slots=True)
class _Sent:
    ids: frozenset[str]
    state: Any
    carried: int


@dataclass(slots=True)
class _Point:
    kind: Kind
    device_type: str
    told: Any = UNKNOWN
    last_code: Any = None
    """The last fault code known active (what a restated clear names)."""
    uncertain: bool = False
    now: Any = UNKNOWN
    text: str | None = None
    ts: float = 0.0
    in_flight: list[_Sent] = field(default_factory=list)
    folded: int = 0
    owed: bool = False

    def view(self) -> Any:
        """The backend's state once what is in flight is stored."""
        if self.in_flight:
            return self.in_flight[-1].state
        if self.told is UNKNOWN and self.kind == "fault":
            return None
        return self.told


def _state(kind: Kind, value: Any) -> Any:
    return None if kind == "fault" and no_fault(value) else value


def _diff(kind: Kind, old: Any, new: Any) -> list[Event]:
    if old == new and old is not UNKNOWN:
        return []
    if kind == "status":
        return [Event(new)]
    events = []
    if old is not None:
        events.append(Event(old, active=False))
    if new is not None:
        events.append(Event(new, active=True))
    return events


def _changes(kind: Kind, old: Any, new: Any) -> int:
    return len(_diff(kind, old, new)) if old is not UNKNOWN else int(new is not None or kind == "status")


class ServiceLedger:
    """The last published state of every fault and status point. Not thread-safe."""

    def __init__(self) -> None:
        self._points: dict[PointKey, _Point] = {}
        self._by_id: dict[str, PointKey] = {}
        self.dirty = False
        """Changed since the last :meth:`encode`: the daemon saves it."""
        self.counts = {"coalesced": 0, "restated": 0}

    # ---- readings ---------------------------------------------------------------------------

    def observe(
        self, key: PointKey, kind: Kind, device_type: str, value: Any, ts: float, text: str | None = None
    ) -> Change | None:
        """A good reading of a fault or status point: what to publish now, or None."""
        point = self._points.get(key)
        if point is None:
            point = self._points[key] = _Point(kind=kind, device_type=device_type)
        state = _state(kind, value)
        first = point.now is UNKNOWN
        previous = point.view() if first else point.now
        point.now, point.text, point.ts, point.device_type = state, text, ts, device_type
        if kind == "fault" and state is not None and point.last_code != state:
            point.last_code = state
            self.dirty = True
        if point.owed:
            point.folded += _changes(kind, previous, state)
            return None
        events = _diff(kind, point.view(), state)
        if first and point.uncertain and not events:
            events = self._restatement(point)
            self.counts["restated"] += bool(events)
        point.uncertain = False
        if not events:
            return None
        return Change(key, kind, device_type, tuple(events), state, text, ts)

    def owed(self) -> Iterator[Change]:
        """The points whose records the buffer refused: the difference between what the backend
        was told and what the device reads now (or a restatement), carrying ``coalesced``."""
        for key, point in self._points.items():
            if not point.owed or point.now is UNKNOWN:
                continue
            events = _diff(point.kind, point.view(), point.now) or self._restatement(point)
            if not events:
                continue
            coalesced = max(0, point.folded - len(events))
            events[-1] = Event(events[-1].value, events[-1].active, coalesced)
            self.counts["coalesced"] += coalesced
            point.owed, point.folded = False, 0
            yield Change(key, point.kind, point.device_type, tuple(events), point.now, point.text, point.ts)

    @staticmethod
    def _restatement(point: _Point) -> list[Event]:
        if point.now is UNKNOWN:
            return []
        if point.kind == "status":
            return [Event(point.now)]
        if point.now is not None:
            return [Event(point.now, active=True)]
        return [Event(point.last_code, active=False)] if point.last_code is not None else []

    # ---- the records' fate ------------------------------------------------------------------

    def sent(self, change: Change, ids: Iterable[str]) -> None:
        """The records made from ``change`` (their ids) go to the buffer now."""
        point = self._points[change.key]
        id_set = frozenset(ids)
        if not id_set:  # no stream takes it: nothing to tell, nothing owed
            point.told = change.state
            self.dirty = True
            return
        point.in_flight.append(_Sent(id_set, change.state, change.carried))
        for record_id in id_set:
            self._by_id[record_id] = change.key
        self.dirty = True

    def settle(self, ids: Iterable[str], not_stored: frozenset[str] = frozenset()) -> frozenset[str]:
        """A commit of the records ``ids`` returned; ``not_stored`` of them the buffer refused.
        Returns the refused ids that are the ledger's (their points are owed: do not keep them)."""
        if not self._by_id:
            return frozenset()
        touched: set[PointKey] = set()
        for record_id in ids:
            key = self._by_id.pop(record_id, None)
            if key is not None:
                touched.add(key)
        taken: set[str] = set()
        for key in touched:
            point = self._points[key]
            kept: list[_Sent] = []
            for sent in point.in_flight:
                if any(i in self._by_id for i in sent.ids):
                    kept.append(sent)  # part of it is still in flight
                    continue
                refused = sent.ids & not_stored
                if refused:
                    taken |= refused
                    point.owed = True
                    point.folded += sent.carried
                else:
                    point.told = sent.state
            point.in_flight = kept
            self.dirty = True
        return frozenset(taken)

    def owes(self) -> bool:
        return any(p.owed for p in self._points.values())

    # ---- reading the picture ----------------------------------------------------------------

    def told(self, key: PointKey) -> Any:
        """What committed records told the backend of ``key`` (fault: the code or None; UNKNOWN)."""
        point = self._points.get(key)
        return UNKNOWN if point is None else point.told

    def keys(self, point_name: str | None = None) -> list[PointKey]:
        return [k for k in self._points if point_name is None or k[2] == point_name]

    def describe(self) -> dict[str, Any]:
        points = self._points.values()
        return {
            "points": len(self._points),
            "in_flight": sum(len(p.in_flight) for p in points),
            "owed": sum(p.owed for p in points),
            **self.counts,
        }

    # ---- persistence ------------------------------------------------------------------------

    def encode(self) -> bytes:
        """The document to save (points with records in flight saved as uncertain); clears ``dirty``."""
        self.dirty = False
        rows = [
            [
                *key,
                p.kind,
                p.device_type,
                p.told is not UNKNOWN,
                None if p.told is UNKNOWN else p.told,
                p.last_code,
                bool(p.in_flight) or p.uncertain,
            ]
            for key, p in sorted(self._points.items())
        ]
        return json.dumps({"format": _FORMAT, "points": rows}, separators=(",", ":")).encode()

    @classmethod
    def decode(cls, raw: bytes | None) -> ServiceLedger:
        """A ledger from a saved document (None: empty). Raises PrivacyStateError if unreadable."""
        ledger = cls()
        if raw is None:
            return ledger
        try:
            document = json.loads(raw)
            for row in document["points"]:
                source, device, name, kind, device_type, known, told, last_code, uncertain = row
                if kind not in ("fault", "status"):
                    raise ValueError(f"kind {kind!r}")
                ledger._points[(str(source), str(device), str(name))] = _Point(
                    kind=kind,
                    device_type=str(device_type),
                    told=told if known else UNKNOWN,
                    last_code=last_code,
                    uncertain=bool(uncertain),
                )
        except (ValueError, KeyError, TypeError) as exc:
            raise PrivacyStateError(f"stored service ledger unreadable: {exc}") from None
        return ledger
