"""Polling Modbus devices: one scheduler per bus (a TCP host or a serial port).

:func:`make_modbus_source` turns a ``modbus-tcp``, ``modbus-rtu`` or ``modbus-rtu-over-tcp``
source config into a :class:`ModbusBusRunner`, a :class:`drivers.reading.Source`. The runner owns one
:class:`~drivers.modbus.link.ModbusLink` and polls every device on it in turn, so that a
serial bus carries one frame at a time. For each device it reads the blocks the planner
compiled from its profile (blocks of a slower poll class only when their ``max_age_s`` has
passed), decodes them and hands the readings to the sink.

Failure rules, all here:
- each request's timeout follows the device's measured latency (4x its moving average plus
  50 ms, at least 100 ms, at most the source's ``timeout_s``); one retry at the full timeout;
- a timeout ends that device's poll (its remaining due points are reported ``comm_error``);
  the bus goes on to the next device;
- a block the device refuses with exception 2 or 3 (illegal address or value), or never answers
  although it has more than one point (a single read would not time out), *heals*: each of
  its points, then each unused range inside it, is read alone; what the device refuses is
  learned as unreadable (:mod:`drivers.modbus.facts`, persisted under the state directory for
  exception responses), a block refused although every part of it reads teaches a smaller
  read limit, and the device is re-planned. The points that read are reported from the
  single reads at once; an unreadable point is reported ``invalid`` every poll and named in
  ``health()`` (``unreadable``), a problem for ``heatgate status`` and ``doctor``;
- any other exception response marks only that block's points ``comm_error``; the device
  stays up;
- a profile's ``init`` writes go out once per run, before the device's first poll;
- after ``fail_after`` failed polls in a row a device is *backing off*: it is re-probed on a
  slow, jittered, capped exponential timer, so one dead slave never stalls the others;
- losing and regaining a device or the link is logged once each way.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heatgate.backoff import Backoff
from heatgate.drivers.modbus.errors import (
    ModbusCommError,
    ModbusError,
    ModbusExceptionResponse,
    ModbusTimeout,
    WriteRefused,
)
from heatgate.drivers.modbus.facts import DeviceFacts, facts_path
from heatgate.drivers.modbus.link import ModbusLink
from heatgate.drivers.modbus.planner import Block, block_extent, plan_profile, unplanned_points
from heatgate.drivers.modbus.profile import BIT_TABLES, Point, Profile, load_profile
from heatgate.drivers.modbus.settings import ModbusDevice, ModbusRtuOverTcpSource, ModbusRtuSource, ModbusTcpSource
from heatgate.drivers.modbus.values import PointValue, point_value, raw_for_write, split_block
from heatgate.drivers.reading import DeviceWrite, Quality, Reading, ReadingSink
from heatgate.logs import get_logger

__all__ = ["DeviceState", "ModbusBusRunner", "ModbusRtuRunner", "ModbusTcpRunner", "make_modbus_source"]

_log = get_logger("heatgate.modbus")
ILLEGAL_ADDRESS = 2
ILLEGAL_VALUE = 3
REFUSED_CODES = (ILLEGAL_ADDRESS, ILLEGAL_VALUE)
"""Exception codes that say "not this range" (and are learned), not "not now"."""

ModbusSourceConfig = ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource


@dataclass
class DeviceState:
    """A device on the bus: its plan, its timing and its counters."""

    config: ModbusDevice
    profile: Profile
    blocks: list[Block]
    facts: DeviceFacts
    facts_file: Path | None = None
    unplanned: list[Point] = field(default_factory=list)
    """Points the device cannot answer (learned): never requested, reported ``invalid``."""
    init_done: bool = False
    heal_requests: int = 0
    """Requests spent splitting refused blocks (also counted in ``requests``)."""
    next_at: float = 0.0
    block_read_at: dict[int, float] = field(default_factory=dict)
    latency_s: float | None = None
    failures_in_row: int = 0
    backing_off: bool = False
    backoff: Backoff = field(default_factory=Backoff)
    polls: int = 0
    requests: int = 0
    errors: dict[str, int] = field(default_factory=lambda: {"timeout": 0, "exception": 0, "comm": 0})
    last_reading_ts: float | None = None
    failing_since_ts: float | None = None
    """Wall time of the first of the polls that failed in a row (None while it answers)."""
    last_error: str | None = None
    poll_times: deque[float] = field(default_factory=lambda: deque(maxlen=20))

    def timeout_s(self, cap_s: float) -> float:
        if self.latency_s is None:
            return cap_s
        return min(cap_s, max(0.1, 4 * self.latency_s + 0.05))

    def replan(self) -> None:
        """Plan again with what was learned (slow poll classes are read again at once)."""
        learned = self.facts.all_unreadable()
        self.blocks = plan_profile(self.profile, learned=learned, max_registers=self.facts.max_registers)
        self.unplanned = unplanned_points(self.profile, learned)
        self.block_read_at.clear()

    def unreadable_report(self) -> list[dict[str, str]]:
        return [
            {
                "point": p.name,
                "kind": p.kind,
                "registers": f"{p.table} {p.address}" + (f"-{p.end - 1}" if p.count > 1 else ""),
            }
            for p in self.unplanned
        ]

    def poll_rate_hz(self) -> float:
        if len(self.poll_times) < 2:
            return 0.0
        span = self.poll_times[-1] - self.poll_times[0]
        return (len(self.poll_times) - 1) / span if span > 0 else 0.0


class ModbusBusRunner:
    """Polls every device of one Modbus source over one link. See the module docstring."""

    def __init__(
        self,
        config: ModbusSourceConfig,
        *,
        link: ModbusLink | None = None,
        retries: int = 1,
        fail_after: int = 2,
        probe_min_s: float = 5.0,
        probe_max_s: float = 120.0,
        state_dir: Path | None = None,
    ) -> None:
        """``state_dir``: where learned unreadable ranges persist (none: this run only)."""
        self.name = config.name
        self.config = config
        if link is None:
            if isinstance(config, ModbusTcpSource):
                link = ModbusLink.tcp(config.host, config.port, timeout_s=config.timeout_s)
            elif isinstance(config, ModbusRtuOverTcpSource):
                link = ModbusLink.rtu_over_tcp(config.host, config.port, timeout_s=config.timeout_s)
            else:
                link = ModbusLink.rtu(
                    config.port,
                    baudrate=config.baudrate,
                    parity=config.parity,
                    stopbits=config.stopbits,
                    timeout_s=config.timeout_s,
                )
        self.link = link
        self.retries = retries
        self.fail_after = fail_after
        self.devices: dict[str, DeviceState] = {}
        for device in config.devices:
            profile = load_profile(device.profile)
            path = facts_path(state_dir, config.name, device.name) if state_dir is not None else None
            state = DeviceState(
                config=device,
                profile=profile,
                blocks=[],
                facts=DeviceFacts.load(path, unit_id=device.unit_id, profile=profile.name),
                facts_file=path,
                backoff=Backoff(min_s=probe_min_s, max_s=probe_max_s),
            )
            state.replan()
            self.devices[device.name] = state
        self._link_up: bool | None = None
        self._writes: list[DeviceWrite] = []

    # -- the Source protocol -------------------------------------------------------------------

    async def run(self, sink: ReadingSink) -> None:
        """Poll until cancelled; the link is closed on the way out."""
        loop = asyncio.get_running_loop()
        for state in self.devices.values():
            state.next_at = loop.time()
        try:
            while True:
                now = loop.time()
                state = min(self.devices.values(), key=lambda d: d.next_at)
                if state.next_at > now:
                    await asyncio.sleep(state.next_at - now)
                    continue
                readings = await self.poll_device(state)
                after = loop.time()
                if state.backing_off:
                    state.next_at = after + state.backoff.next_delay_s()
                else:
                    interval = state.config.interval_s
                    # Keep the cadence, but never try to catch up on missed polls in a burst.
                    state.next_at = max(state.next_at + interval, after)
                if readings:
                    await sink(readings)
        finally:
            self.link.close()

    def health(self) -> dict[str, Any]:
        """Per device: last reading time, polls, requests, errors by kind, state, poll rate."""
        return {
            "type": self.config.__struct_config__.tag,
            "link": self.link.label,
            "connected": self.link.connected,
            "devices": {
                name: {
                    "unit_id": d.config.unit_id,
                    "profile": d.profile.name,
                    "state": "backing_off" if d.backing_off else "ok",
                    "last_reading_ts": d.last_reading_ts,
                    "polls": d.polls,
                    "requests": d.requests,
                    "errors": dict(d.errors),
                    "failures_in_row": d.failures_in_row,
                    "failing_since_ts": d.failing_since_ts,
                    "last_error": d.last_error,
                    "poll_rate_hz": round(d.poll_rate_hz(), 3),
                    "latency_ms": None if d.latency_s is None else round(d.latency_s * 1000, 1),
                    "unreadable": d.unreadable_report(),
                    "unreadable_registers": d.facts.describe(),
                    "learned_max_registers": d.facts.max_registers,
                    "heal_requests": d.heal_requests,
                }
                for name, d in self.devices.items()
            },
        }

    # -- polling -------------------------------------------------------------------------------

    async def poll_device(self, state: DeviceState) -> list[Reading]:
        """One poll of one device: every due block, in plan order. Returns its readings."""
        if not state.init_done and not state.backing_off:
            await self._init_device(state)
        now_mono = time.monotonic()
        due = [
            (i, b)
            for i, b in enumerate(state.blocks)
            if b.max_age_s is None or now_mono - state.block_read_at.get(i, -1e18) >= b.max_age_s
        ]
        if state.backing_off:
            due = due[:1]  # a probe: one request, no retries
        readings: list[Reading] = []
        alive = False
        failed_at: int | None = None
        healed = False
        for position, (index, block) in enumerate(due):
            try:
                data = await self._read_block(state, block)
            except ModbusExceptionResponse as exc:
                alive = True
                state.errors["exception"] += 1
                if exc.code in REFUSED_CODES and not state.backing_off:
                    readings.extend(await self._heal(state, block, silent=False))
                    healed = True
                    continue
                readings.extend(self._failed(state, block, Quality.COMM_ERROR))
                continue
            except ModbusTimeout:
                if len(block.points) > 1 and not state.backing_off:
                    try:
                        readings.extend(await self._heal(state, block, silent=True))
                    except ModbusTimeout:
                        pass  # the device itself is silent
                    else:
                        alive = healed = True
                        continue
                failed_at = position
                break
            except ModbusCommError:
                failed_at = position
                break
            alive = True
            state.block_read_at[index] = now_mono
            readings.extend(self._reading(state, pv, time.time()) for pv in split_block(block, data))
        if failed_at is not None and not state.backing_off:
            for _, block in due[failed_at:]:
                readings.extend(self._failed(state, block, Quality.COMM_ERROR))
        if healed:
            state.replan()
        if not state.backing_off:
            ts = time.time()
            healed_names = {r.point for r in readings}
            readings.extend(
                self._reading(state, PointValue(p, None, Quality.INVALID), ts)
                for p in state.unplanned
                if p.name not in healed_names
            )
        self._account(state, alive)
        return readings

    async def _heal(self, state: DeviceState, block: Block, *, silent: bool) -> list[Reading]:
        """Split a refused (or, ``silent``, unanswered) block: read each point, then each unused
        range, alone; learn what the device refuses. Returns the block's points' readings.
        Raises ModbusTimeout when the first single read is not answered either (the device,
        not the block, is silent) and ModbusCommError when the link fails."""
        facts = state.facts
        learned_before = (len(facts.unreadable), facts.max_registers)
        requests_before = state.requests
        found = False
        answered = False
        readings: list[Reading] = []
        for point in block.points:
            try:
                data = await self._read_range(state, point.table, point.address, point.end, once=not answered)
            except ModbusExceptionResponse as exc:
                answered = True
                if exc.code in REFUSED_CODES:
                    facts.add(point.table, point.address, point.end - 1, silent=False)
                    found = True
                    readings.append(self._reading(state, PointValue(point, None, Quality.INVALID), time.time()))
                else:
                    readings.append(self._reading(state, PointValue(point, None, Quality.COMM_ERROR), time.time()))
                continue
            except ModbusTimeout:
                if not answered:
                    raise
                facts.add(point.table, point.address, point.end - 1, silent=True)
                found = True
                readings.append(self._reading(state, PointValue(point, None, Quality.INVALID), time.time()))
                continue
            answered = True
            readings.append(self._reading(state, point_value(point, data), time.time()))
        if not found and (len(block.points) > 1 or block.count > block.points[0].count):
            for start, end in _unused_ranges(block):
                found = await self._probe_unused(state, block.table, start, end) or found
            if not found and len(block.points) > 1:
                facts.limit(max(1, block.count // 2))  # every part reads: the block is too long
        state.heal_requests += state.requests - requests_before
        if (len(facts.unreadable), facts.max_registers) != learned_before:
            try:
                facts.save(state.facts_file)
            except OSError as exc:
                _log.warning("modbus.facts_not_saved", source=self.name, device=state.config.name, error=str(exc))
        _log.warning(
            "modbus.block_refused_replanned",
            source=self.name,
            device=state.config.name,
            table=block.table,
            start=block.start,
            count=block.count,
            unreadable=facts.describe(),
            max_registers=facts.max_registers,
        )
        return readings

    async def _probe_unused(self, state: DeviceState, table: str, start: int, end: int) -> bool:
        """Find the registers in ``start..end-1`` the device refuses (or drops), halving the range
        while it fails; learn them. True if any was found."""
        try:
            await self._read_range(state, table, start, end)
        except ModbusExceptionResponse as exc:
            if exc.code not in REFUSED_CODES:
                return False
            silent = False
        except ModbusTimeout:
            silent = True
        else:
            return False
        if end - start == 1:
            state.facts.add(table, start, start, silent=silent)
            return True
        middle = (start + end) // 2
        low = await self._probe_unused(state, table, start, middle)
        high = await self._probe_unused(state, table, middle, end)
        if not (low or high):  # each half reads alone: the range only fails as a whole
            state.facts.add(table, start, end - 1, silent=silent)
        return True

    async def _read_range(
        self, state: DeviceState, table: str, start: int, end: int, *, once: bool = False
    ) -> list[int] | list[bool]:
        """Items ``start..end-1`` alone (padded to an even count where the profile says so);
        ``once``: a single attempt."""
        extent = block_extent(
            table, start, end, state.profile.unreadable, even_count=state.profile.even_register_count
        ) or (start, end - start)
        data = await self._read_block(state, Block(table, *extent, (), None), attempts=1 if once else None)
        return data[start - extent[0] : end - extent[0]]

    def take_writes(self) -> list[DeviceWrite]:
        """The profile's ``[[init]]`` writes made since the last call, for the agent to audit."""
        writes, self._writes = self._writes, []
        return writes

    def _init_write(self, state: DeviceState, table: str, address: int, count: int, error: str | None) -> DeviceWrite:
        return DeviceWrite(self.name, state.config.name, table, address, count, time.time(), error)

    async def _init_device(self, state: DeviceState) -> None:
        """The profile's one-time writes; a refusal is logged and the device polled anyway."""
        state.init_done = True
        for write in state.profile.init:
            op = "write_coil" if write.table == "coil" else "write_registers"
            try:
                await self.link.request(
                    op,
                    write.address,
                    unit_id=state.config.unit_id,
                    timeout_s=self.config.timeout_s,
                    values=write.values,
                )
            except ModbusError as exc:
                self._writes.append(self._init_write(state, write.table, write.address, len(write.values), str(exc)))
                _log.warning(
                    "modbus.init_write_refused",
                    source=self.name,
                    device=state.config.name,
                    address=write.address,
                    error=str(exc),
                )
                continue
            self._writes.append(self._init_write(state, write.table, write.address, len(write.values), None))
            _log.info(
                "modbus.init_write_sent",
                source=self.name,
                device=state.config.name,
                address=write.address,
                note=write.note,
            )

    async def _read_block(
        self, state: DeviceState, block: Block, *, attempts: int | None = None
    ) -> list[int] | list[bool]:
        if attempts is None:
            attempts = 1 if state.backing_off else 1 + self.retries
        cap_s = self.config.timeout_s
        for attempt in range(attempts):
            timeout_s = state.timeout_s(cap_s) if attempt == 0 else cap_s
            state.requests += 1
            started = time.monotonic()
            try:
                data = await self.link.request(
                    block.table, block.start, count=block.count, unit_id=state.config.unit_id, timeout_s=timeout_s
                )
            except ModbusTimeout:
                state.errors["timeout"] += 1
                state.last_error = f"no answer within {timeout_s:.1f} s"
                if attempt == attempts - 1:
                    raise
                continue
            except ModbusCommError as exc:
                state.errors["comm"] += 1
                state.last_error = str(exc)
                self._link_state(False, str(exc))
                raise
            except ModbusExceptionResponse:
                self._observe_latency(state, time.monotonic() - started)
                raise
            self._link_state(True, "")
            self._observe_latency(state, time.monotonic() - started)
            return data
        raise AssertionError("unreachable")

    @staticmethod
    def _observe_latency(state: DeviceState, latency_s: float) -> None:
        state.latency_s = latency_s if state.latency_s is None else 0.8 * state.latency_s + 0.2 * latency_s

    def _account(self, state: DeviceState, alive: bool) -> None:
        state.polls += 1
        state.poll_times.append(time.monotonic())
        if alive:
            if state.backing_off:
                _log.info("modbus.device_answering", source=self.name, device=state.config.name)
                state.backing_off = False
                state.next_at = asyncio.get_running_loop().time()  # poll it fully at once
            state.failures_in_row = 0
            state.failing_since_ts = None
            state.backoff.reset()
            return
        state.failures_in_row += 1
        if state.failing_since_ts is None:
            state.failing_since_ts = time.time()
        if not state.backing_off and state.failures_in_row >= self.fail_after:
            state.backing_off = True
            _log.warning(
                "modbus.device_backing_off",
                source=self.name,
                device=state.config.name,
                unit_id=state.config.unit_id,
                failures=state.failures_in_row,
            )

    def _link_state(self, up: bool, reason: str) -> None:
        if self._link_up is up:
            return
        if up and self._link_up is False:
            _log.info("modbus.link_restored", source=self.name, link=self.link.label)
        elif not up:
            _log.warning("modbus.link_lost", source=self.name, link=self.link.label, reason=reason)
        self._link_up = up

    def _reading(self, state: DeviceState, pv: PointValue, ts: float) -> Reading:
        if pv.quality is Quality.OK:
            state.last_reading_ts = ts
        return Reading(
            source=self.name,
            device=state.config.name,
            device_type=state.profile.device_type,
            point=pv.point.name,
            kind=pv.point.point_kind,
            value=pv.value,
            ts=ts,
            quality=pv.quality,
            unit=pv.point.unit,
            text=pv.text,
        )

    def _failed(self, state: DeviceState, block: Block, quality: Quality) -> list[Reading]:
        ts = time.time()
        return [self._reading(state, PointValue(p, None, quality), ts) for p in block.points]

    # -- writes (only ever on a verified, approved command) ---------------------------------------

    async def write_point(self, device: str, point: str, value: float) -> float:
        """Write a writable point within its profile bounds, read it back, return the read-back
        value. Raises :class:`WriteRefused` before the wire for an unknown device or point, a
        point that is not writable or a value out of bounds; other :class:`ModbusError` s for
        what the device does. The agent calls this only for a verified, approved command."""
        state = self.devices.get(device)
        if state is None:
            raise WriteRefused(
                f"no device {device!r} on source {self.name!r}", point=point, source=self.name, device=device
            )
        try:
            target = state.profile.point(point)
        except KeyError:
            raise WriteRefused(
                f"profile {state.profile.name!r} has no point {point!r}", point=point, source=self.name, device=device
            ) from None
        try:
            words = raw_for_write(target, value)
        except ValueError as exc:
            raise WriteRefused(str(exc), point=point, source=self.name, device=device) from None
        op = "write_coil" if target.table in BIT_TABLES else "write_registers"
        timeout_s = self.config.timeout_s
        unit = state.config.unit_id
        try:
            await self.link.request(op, target.address, unit_id=unit, timeout_s=timeout_s, values=words)
            data = await self.link.request(
                target.table, target.address, count=target.count, unit_id=unit, timeout_s=timeout_s
            )
        except ModbusError as exc:
            exc.source, exc.device = self.name, device
            raise
        pv = point_value(target, data)
        if pv.quality is not Quality.OK or not isinstance(pv.value, int | float):
            raise ModbusCommError(f"read-back of {point!r} gave no value", source=self.name, device=device)
        _log.info("modbus.point_written", source=self.name, device=device, point=point, value=pv.value)
        return float(pv.value)


def _unused_ranges(block: Block) -> list[tuple[int, int]]:
    """``(start, end)`` of the registers a block reads that none of its points uses."""
    ranges: list[tuple[int, int]] = []
    cursor = block.start
    for point in sorted(block.points, key=lambda p: p.address):
        if point.address > cursor:
            ranges.append((cursor, point.address))
        cursor = max(cursor, point.end)
    if block.end > cursor:
        ranges.append((cursor, block.end))
    return ranges


class ModbusTcpRunner(ModbusBusRunner):
    """A Modbus TCP source: one client for its host, devices polled in turn."""

    def __init__(self, config: ModbusTcpSource, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)


class ModbusRtuRunner(ModbusBusRunner):
    """A Modbus RTU source: one scheduler for its serial port, devices polled in turn."""

    def __init__(self, config: ModbusRtuSource, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)


def make_modbus_source(config: ModbusSourceConfig, **kwargs: Any) -> ModbusBusRunner:
    """The runner for a ``modbus-tcp``, ``modbus-rtu`` or ``modbus-rtu-over-tcp`` source config
    (profiles loaded and planned here, so a bad profile fails at start with a located
    ConfigError). ``state_dir=`` makes learned unreadable ranges persist."""
    if isinstance(config, ModbusTcpSource):
        return ModbusTcpRunner(config, **kwargs)
    if isinstance(config, ModbusRtuSource):
        return ModbusRtuRunner(config, **kwargs)
    return ModbusBusRunner(config, **kwargs)
