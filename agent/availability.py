"""When a source or device counts as unavailable for the backend: pure rules, no clock, no I/O.

:func:`down_targets` reads what is down now from the sources' views (the supervisor's state and
the driver's health document): a source the supervisor does not run or whose port is not open,
and, on a running source, a device whose polls fail in a row (``failing_since_ts``).
:class:`AvailabilityTracker` turns those observations into transitions the backend is told of
(service status records of the point ``availability``):

- ``unavailable`` once a target has been down *without a break* for ``unavailable_after_s``;
- ``available`` when a target reported unavailable answers again.

A target that is down for less than the threshold is never reported, however often it drops
(no flapping); a reported target is reported at most once until it is back. The tracker starts
from what the backend was last told (``reported_unavailable``, from the service ledger), so that
a target that came back while the agent was stopped is reported available at start.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from heatgate.agent.health import SourceView, source_state

__all__ = ["AvailabilityTracker", "Down", "Target", "Transition", "down_targets"]

Target = tuple[str, str]
"""(source, device); a source as a whole is (source, source)."""


@dataclass(frozen=True, slots=True)
class Down:
    reason: str
    """What the agent sees, without identifiers (``waiting-for-port``, ``no answer``)."""
    since_s: float | None = None
    """When it went down, if the driver knows (else: when the tracker first saw it)."""


@dataclass(frozen=True, slots=True)
class Transition:
    target: Target
    available: bool
    reason: str | None
    at_s: float


def down_targets(view: SourceView) -> dict[Target, Down]:
    """What of one source is down now: the source itself (not run by the supervisor, or its port
    not open), else each of its devices failing in a row."""
    state = source_state(view)
    if state != "running":
        return {(view.name, view.name): Down(state)}
    found: dict[Target, Down] = {}
    devices = view.health.get("devices")
    if isinstance(devices, Mapping):
        for name, device in devices.items():
            since = device.get("failing_since_ts") if isinstance(device, Mapping) else None
            if isinstance(since, int | float):
                found[(view.name, str(name))] = Down("no answer", float(since))
    return found


class AvailabilityTracker:
    """Debounces the observations of :func:`down_targets` into :class:`Transition` s."""

    def __init__(self, *, unavailable_after_s: float, reported_unavailable: Iterable[Target] = ()) -> None:
        self.unavailable_after_s = unavailable_after_s
        self._down_since: dict[Target, float] = {}
        self._reported: set[Target] = set(reported_unavailable)

    def observe(self, now_s: float, down: Mapping[Target, Down]) -> list[Transition]:
        """Everything that is down at ``now_s`` (every other target is up): the transitions."""
        out: list[Transition] = []

        def up(target: Target) -> bool:
            # A device of a source that is down as a whole is not back.
            return target not in down and (target[0], target[0]) not in down

        for target in [t for t in self._down_since if up(t)]:
            del self._down_since[target]
        for target in sorted(t for t in self._reported if up(t)):
            self._reported.discard(target)
            out.append(Transition(target, True, None, now_s))
        for target, state in sorted(down.items()):
            since = self._down_since.get(target)
            if since is None:
                since = now_s if state.since_s is None else min(state.since_s, now_s)
                self._down_since[target] = since
            if target not in self._reported and now_s - since >= self.unavailable_after_s:
                self._reported.add(target)
                out.append(Transition(target, False, state.reason, now_s))
        return out

    @property
    def reported(self) -> frozenset[Target]:
        return frozenset(self._reported)
