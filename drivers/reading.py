"""The one value type every source emits, and the contract a source fulfils.

A :class:`Reading` is what a driver saw, before any privacy processing: it may carry an
identifier (a serial number, an equipment id) as its value when the point's kind is
``identifier``. Only the privacy pipeline (``agent/privacy``) decides what of it goes where.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import msgspec

from heatgate.errors import HeatgateError

__all__ = ["DeviceWrite", "DriverError", "PointKind", "Quality", "Reading", "ReadingSink", "ReportsWrites", "Source"]


class Quality(StrEnum):
    OK = "ok"
    STALE = "stale"
    COMM_ERROR = "comm_error"
    INVALID = "invalid"


class PointKind(StrEnum):
    MEASUREMENT = "measurement"
    COUNTER = "counter"
    STATUS = "status"
    FAULT = "fault"
    IDENTIFIER = "identifier"


class Reading(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """One point's value at one time, from one device of one source."""

    source: str
    """The config's source name (``heatpump-bus``)."""
    device: str
    """The device's name within the source, from config (``hp1``); never a serial number."""
    device_type: str
    """Kind of device (``heat-pump``, ``energy-meter``, ``smart-meter``, ``zwave-sensor``)."""
    point: str
    """The point's name from the profile (``outdoor_temp_c``)."""
    kind: PointKind
    value: float | int | str | None
    """None unless ``quality`` is ok (or stale, carrying the last good value)."""
    ts: float
    """Source timestamp, seconds since the epoch, UTC."""
    quality: Quality = Quality.OK
    unit: str | None = None
    text: str | None = None
    """For status and fault points: the profile's label of the code (``"high pressure"``)."""


class DriverError(HeatgateError):
    """Root of every driver error. Carries the source name and, where known, the device."""

    def __init__(self, message: str, *, source: str = "", device: str = "") -> None:
        super().__init__(message)
        self.source = source
        self.device = device


ReadingSink = Callable[[Sequence[Reading]], Awaitable[None]]
"""Where a source hands its readings; awaiting it is the pipeline's back-pressure."""


@dataclass(frozen=True, slots=True)
class DeviceWrite:
    """A write a driver made on its own, from configuration (a profile's one-time ``[[init]]``
    write that unlocks a device): the agent audits each one. ``error`` is None when it was sent."""

    source: str
    device: str
    table: str
    address: int
    count: int
    ts: float
    error: str | None = None


@runtime_checkable
class ReportsWrites(Protocol):
    """A source that makes configured writes of its own hands them over to be audited."""

    def take_writes(self) -> list[DeviceWrite]:
        """The writes made since the last call (each returned once)."""
        ...


class Source(Protocol):
    """A running source: owns its port and its timing, emits readings, reports its health."""

    name: str

    async def run(self, sink: ReadingSink) -> None:
        """Poll or listen until cancelled. Survives device faults; raises DriverError only
        when it cannot go on (the daemon restarts it with backoff)."""
        ...

    def health(self) -> dict[str, Any]:
        """JSON-able health for ``heatgate status``: last reading time, rates, errors by kind."""
        ...
