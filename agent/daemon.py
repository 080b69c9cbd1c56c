"""The daemon: one asyncio loop, named tasks in one task group, over the parts that
:func:`agent.assembly.assemble` built.

    sources ──readings──> pipeline task ──records──> buffer (commit) ──> publisher ──> broker
                               ▲                         ▲
          connectivity, audit ─┘        retention sweeper┘        status server, watchdog

A source that fails is restarted with backoff while the others go on. SIGTERM (or SIGINT)
stops the sources, runs what they delivered through the pipeline, closes the open aggregation
windows, commits everything, publishes ``offline`` and exits 0. SIGHUP reloads what can change
without a restart (see :mod:`agent.reload`) while the pipeline and the publisher go on.

One agent per state directory: the first thing ``run`` does is take ``<state_dir>/agent.lock``
(:mod:`agent.statelock`); a second agent exits 1 before it opens the buffer, the status socket
or a broker connection.

The health rules are in :mod:`agent.health`; this module only gathers what they look at.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from msgspec import to_builtins

from heatgate import __version__
from heatgate.agent.assembly import BuiltSource, Parts, StartupError, assemble
from heatgate.agent.availability import AvailabilityTracker, Down, Target, down_targets
from heatgate.agent.config import LoadedConfig
from heatgate.agent.health import (
    CounterRate,
    HealthLimits,
    HealthSnapshot,
    SourceCounters,
    SourceView,
    broker_health,
    buffer_problems,
    health_line,
    source_status,
)
from heatgate.agent.health import problems as health_problems
from heatgate.agent.privacy.config_audit import config_change_details, refusal_reason
from heatgate.agent.privacy.pipeline import AVAILABILITY_POINT, Pipeline
from heatgate.agent.privacy.policy import Policy
from heatgate.agent.privacy.service_ledger import LEDGER_KEY
from heatgate.agent.privacy.state import PrivacyStateError
from heatgate.agent.reload import plan_reload
from heatgate.agent.sdnotify import LoopWatchdog, Notifier, watchdog_interval_s
from heatgate.agent.statelock import StateLock, StateLocked
from heatgate.backoff import Backoff
from heatgate.buffer.api import NewRecord
from heatgate.buffer.errors import BufferFault, RecordsNotStored
from heatgate.drivers.reading import DriverError, Reading, ReportsWrites, Source
from heatgate.logs import get_logger
from heatgate.typedload import ConfigError

__all__ = ["Agent", "Committer", "RecordStore", "StartupError", "device_write_audits"]

log = get_logger("heatgate.daemon")

READING_QUEUE_BATCHES = 4096
FLUSH_INTERVAL_S = 5.0
STATUS_NOTIFY_INTERVAL_S = 30.0
SHUTDOWN_S = 12.0
"""A clean stop gets this long (systemd's TimeoutStopSec is 20 s)."""
PUBLISHER_STOP_S = 5.0
"""Of which the publisher's stop (``offline`` and its PUBACK) gets at most this."""
UNSTORED_MAX = 10_000
"""Records a full disk could not take, held in memory until it can (oldest dropped beyond this)."""
HEALTH_LIMITS = HealthLimits()


class RecordStore(Protocol):
    """Where records are committed (:class:`buffer.api.Buffer`)."""

    async def put(self, records: Sequence[NewRecord]) -> None: ...


Settle = Callable[[Sequence[str], frozenset[str]], frozenset[str]]
"""(ids of a committed batch, those of them the buffer refused) -> the refused ids the caller takes
back (:meth:`heatgate.agent.privacy.service_ledger.ServiceLedger.settle`)."""


class Committer:
    """Commits records. What a full disk leaves unstored (records of a protected stream, with
    nothing left to evict) is kept in memory, at most ``max_waiting`` of them (the oldest are
    dropped and counted beyond that), and offered again with the next batch: the agent goes on
    and says so in its status. Refused records that ``settle`` takes back (fault and status
    records: the service ledger coalesces them) are not kept."""

    def __init__(self, *, max_waiting: int = UNSTORED_MAX, settle: Settle | None = None) -> None:
        self.max_waiting = max_waiting
        self.waiting: list[NewRecord] = []
        self.dropped = 0
        self.settle = settle

    async def commit(self, store: RecordStore, records: Sequence[NewRecord]) -> None:
        batch = [*self.waiting, *records]
        self.waiting = []
        not_stored: frozenset[str] = frozenset()
        try:
            await store.put(batch)
        except RecordsNotStored as exc:
            not_stored = exc.ids
        taken = self.settle([r.id for r in batch], not_stored) if self.settle is not None else frozenset()
        if taken:
            log.warning("daemon.service_records_coalescing", refused=len(taken))
        if not_stored - taken:
            kept = [r for r in batch if r.id in not_stored and r.id not in taken]
            overflow = max(0, len(kept) - self.max_waiting)
            self.dropped += overflow
            self.waiting = kept[overflow:]
            log.error(
                "daemon.disk_full_records_held",
                waiting=len(self.waiting),
                dropped=self.dropped,
            )


@dataclass
class _SourceSlot:
    built: BuiltSource
    restarts: int = 0
    last_error: str | None = None
    state: str = "starting"
    backoff: Backoff = field(default_factory=lambda: Backoff(min_s=1.0, max_s=60.0))
    readings: int = 0
    last_reading_ts: float | None = None
    quality: dict[str, int] = field(default_factory=dict)
    first_reading_monotonic: float | None = None
    device_types: dict[str, str] = field(default_factory=dict)
    """Device -> its device type, as its readings say (for availability records)."""

    def view(self) -> SourceView:
        return SourceView(
            name=self.built.name, slot_state=self.state, health=self.built.source.health(), last_error=self.last_error
        )

    def counters(self, now_monotonic: float) -> SourceCounters:
        first = self.first_reading_monotonic
        return SourceCounters(
            type=self.built.type,
            restarts=self.restarts,
            readings=self.readings,
            last_reading_ts=self.last_reading_ts,
            quality=dict(self.quality),
            since_first_reading_s=None if first is None else now_monotonic - first,
        )


@dataclass
class _ReloadState:
    reloads: int = 0
    last_reload_ts: float | None = None
    error: str | None = None
    restart_needed: tuple[str, ...] = ()


class Agent:
    """Everything ``heatgate run`` does. Construct, then ``await run()`` for the exit code.

    It is the :class:`agent.assembly.AgentHooks` of its parts."""

    def __init__(self, loaded: LoadedConfig, *, notifier: Notifier | None = None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.notifier = notifier or Notifier()
        self._stop = asyncio.Event()
        self._readings: asyncio.Queue[Sequence[Reading] | None] = asyncio.Queue(READING_QUEUE_BATCHES)
        self._extra_records: list[NewRecord] = []
        self._started_s = time.time()
        self._slots: dict[str, _SourceSlot] = {}
        self._committer = Committer()
        self._stray_rate = CounterRate()
        self._reload_requested = asyncio.Event()
        self._reload = _ReloadState()
        self._parts: Parts | None = None
        self._policy: Policy | None = None
        self._availability = AvailabilityTracker(unavailable_after_s=self.config.gateway.unavailable_after_s)

    @property
    def parts(self) -> Parts:
        """The parts, once :meth:`run` has assembled them."""
        if self._parts is None:
            raise RuntimeError("the agent's parts are not assembled yet")
        return self._parts

    # ---- start-up -------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; return the process exit code. SIGHUP reloads."""
        loop = asyncio.get_running_loop()
        # At once: SIGHUP's default action kills the process, and a reload may come at any time.
        # One that comes during start-up is applied once the agent runs.
        loop.add_signal_handler(signal.SIGHUP, self._reload_requested.set)
        state_dir = Path(self.config.gateway.state_dir)
        try:
            lock = StateLock.acquire(state_dir)
        except StateLocked as exc:
            return self._cannot_start(StartupError(str(exc), exit_code=1))
        except OSError as exc:
            return self._cannot_start(StartupError(f"cannot lock the state directory {state_dir}: {exc}"))
        try:
            try:
                parts = await assemble(self.loaded, self)
            except StartupError as exc:
                return self._cannot_start(exc)
            self._adopt(parts)
            return await self._run_parts(parts)
        finally:
            lock.release()

    def _adopt(self, parts: Parts) -> None:
        self._parts = parts
        self._policy = parts.policy
        self._slots = {built.name: _SourceSlot(built) for built in parts.sources}
        self._committer.settle = parts.pipeline.ledger.settle
        ledger = parts.pipeline.ledger
        self._availability = AvailabilityTracker(
            unavailable_after_s=self.config.gateway.unavailable_after_s,
            reported_unavailable=[
                (source, device)
                for source, device, _ in ledger.keys(AVAILABILITY_POINT)
                if source in self._slots and ledger.told((source, device, AVAILABILITY_POINT)) == "unavailable"
            ],
        )
        if parts.commands is None:
            log.info("daemon.remote_commands_disabled", reason="no command key pinned")

    @staticmethod
    def _cannot_start(exc: StartupError) -> int:
        log.error("daemon.start_failed", reason=str(exc))
        sys.stderr.write(f"heatgate: {exc}\n")
        sys.stderr.flush()
        return exc.exit_code

    # ---- the tasks ------------------------------------------------------------------------

    async def _run_parts(self, parts: Parts) -> int:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        await parts.status_server.start()
        self._record(
            parts.pipeline.audit(
                "agent.start",
                "agent",
                "info",
                details={
                    "version": __version__,
                    "sources": len(self._slots),
                    **await config_change_details(parts.buffer, self.config),
                },
            )
        )
        exit_code = 0
        try:
            async with asyncio.TaskGroup() as group:
                source_tasks = [
                    group.create_task(self._supervise(name, slot), name=f"source:{name}")
                    for name, slot in self._slots.items()
                ]
                pipeline_task = group.create_task(self._pipeline_loop(), name="pipeline")
                helpers = [
                    group.create_task(self._flush_loop(), name="flusher"),
                    group.create_task(self._sweep_loop(), name="retention-sweeper"),
                    group.create_task(self._status_loop(), name="status-notify"),
                    group.create_task(self._reload_loop(), name="reloader"),
                ]
                publisher_task = group.create_task(parts.publisher.run(), name="publisher")
                watchdog_s = watchdog_interval_s()
                if watchdog_s:
                    watchdog = LoopWatchdog(self.notifier, stall_s=watchdog_s)
                    helpers.append(group.create_task(watchdog.run(), name="watchdog"))
                self.notifier.ready(self.health_line())
                log.info("daemon.ready", gateway=self.config.gateway.id, sources=len(self._slots), version=__version__)

                await self._stop.wait()
                log.info("daemon.stopping")
                self.notifier.stopping()
                try:
                    async with asyncio.timeout(SHUTDOWN_S):
                        await self._shut_down(source_tasks, pipeline_task)
                except TimeoutError:
                    # systemd would kill us at TimeoutStopSec: stop now, with what is committed.
                    exit_code = 1
                    log.error("daemon.shutdown_timed_out", after_s=SHUTDOWN_S)
                for task in [*source_tasks, pipeline_task, publisher_task, *helpers]:
                    task.cancel()
        finally:
            await parts.status_server.close()
            await parts.buffer.close()
            self.notifier.close()
        log.info("daemon.stopped")
        return exit_code

    async def _shut_down(self, source_tasks: list[asyncio.Task[None]], pipeline_task: asyncio.Task[None]) -> None:
        """Stop polling, run what the sources delivered through the pipeline, close the open
        windows, commit, publish ``offline``."""
        parts = self.parts
        for task in source_tasks:
            task.cancel()
        await asyncio.gather(*source_tasks, return_exceptions=True)
        await self._readings.put(None)  # the pipeline drains what the sources delivered
        await pipeline_task
        if parts.commands is not None:
            await parts.commands.close()  # the refusal summary of the last minute, before agent.stop
        closing = parts.pipeline.flush(force=True)
        closing.extend(self._device_write_audits())
        closing.append(parts.pipeline.audit("agent.stop", "agent", "info"))
        await self._store(closing)
        await self._save_ledger()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(parts.publisher.stop(), timeout=PUBLISHER_STOP_S)

    async def _supervise(self, name: str, slot: _SourceSlot) -> None:
        """Run one source for ever; restart it with backoff when it fails."""
        while True:
            slot.state = "running"
            try:
                await slot.built.source.run(self._sink_for(slot))
                slot.state = "ended"
                return
            except DriverError as exc:
                slot.last_error = str(exc)
            except OSError as exc:
                slot.last_error = f"{type(exc).__name__}: {exc}"
            slot.restarts += 1
            slot.state = "restarting"
            delay_s = slot.backoff.next_delay_s()
            log.warning("daemon.source_restarting", source=name, error=slot.last_error, in_s=round(delay_s, 1))
            self._record(self.parts.pipeline.connectivity("source_down", name, slot.last_error))
            await asyncio.sleep(delay_s)

    def _sink_for(self, slot: _SourceSlot) -> Callable[[Sequence[Reading]], Awaitable[None]]:
        """The source's sink: counts what it delivered (for status), then queues it."""

        async def sink(readings: Sequence[Reading]) -> None:
            if readings:
                if slot.first_reading_monotonic is None:
                    slot.first_reading_monotonic = time.monotonic()
                slot.readings += len(readings)
                slot.last_reading_ts = time.time()
                device_types = slot.device_types
                for reading in readings:
                    key = reading.quality.value
                    slot.quality[key] = slot.quality.get(key, 0) + 1
                    if reading.device not in device_types:
                        device_types[reading.device] = reading.device_type
            await self._readings.put(readings)

        return sink

    async def _pipeline_loop(self) -> None:
        """Readings -> records -> committed buffer; wakes the publisher."""
        parts = self.parts
        while True:
            batch = await self._readings.get()
            batches = [batch]
            while not self._readings.empty():  # take what else is waiting: fewer, bigger commits
                batches.append(self._readings.get_nowait())
            done = any(b is None for b in batches)
            records: list[NewRecord] = []
            for readings in batches:
                if readings:
                    records.extend(parts.pipeline.process(readings))
            records.extend(self._take_extra())
            if records or self._committer.waiting:
                await self._store(records)
                parts.publisher.wake()
            if done:
                return

    async def _store(self, records: list[NewRecord]) -> None:
        # Saved first: the points whose records are about to be committed are saved as
        # uncertain, so that a kill -9 before the next save makes a restart restate them.
        await self._save_ledger()
        await self._committer.commit(self.parts.buffer, records)

    async def _save_ledger(self) -> None:
        """Persist the service ledger (what the backend was told of every fault and status point)
        if it changed."""
        ledger = self.parts.pipeline.ledger
        if not ledger.dirty:
            return
        try:
            await self.parts.buffer.set_state(LEDGER_KEY, ledger.encode())
        except BufferFault as exc:
            ledger.dirty = True  # tried again with the next commit
            log.error("daemon.service_ledger_not_saved", reason=str(exc))

    def _record(self, record: NewRecord) -> None:
        """Queue a record made outside the reading path (audit, connectivity)."""
        self._extra_records.append(record)
        if self._readings.empty():
            with contextlib.suppress(asyncio.QueueFull):
                self._readings.put_nowait(())

    def _take_extra(self) -> list[NewRecord]:
        records, self._extra_records = self._extra_records, []
        return records

    async def _flush_loop(self) -> None:
        parts = self.parts
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            # `heatgate privacy` (another process) may have changed consent, objection or
            # restriction: pick that up within one interval.
            await self._reload_privacy_state()
            self._stray_rate.observe(time.monotonic(), parts.publisher.stray_messages)
            records = parts.pipeline.flush()
            records.extend(self._availability_records(time.time()))
            records.extend(self._device_write_audits())
            if not records:
                await self._save_ledger()  # what the last commits settled
            else:
                self._extra_records.extend(records)
                with contextlib.suppress(asyncio.QueueFull):
                    self._readings.put_nowait(())

    def _device_write_audits(self) -> list[NewRecord]:
        return device_write_audits((slot.built.source for slot in self._slots.values()), self.parts.pipeline)

    def _availability_records(self, now_s: float) -> list[NewRecord]:
        """Service status records for the sources and devices that became unavailable (down for
        ``[gateway] unavailable_after_s`` without a break) or came back (:mod:`agent.availability`)."""
        down: dict[Target, Down] = {}
        for slot in self._slots.values():
            down.update(down_targets(slot.view()))
        records: list[NewRecord] = []
        for transition in self._availability.observe(now_s, down):
            source, device = transition.target
            slot = self._slots[source]
            device_type = slot.device_types.get(device, slot.built.type) if device != source else slot.built.type
            log.warning(
                "daemon.availability_changed",
                source=source,
                device=device,
                available=transition.available,
                reason=transition.reason,
            )
            records.extend(
                self.parts.pipeline.availability(
                    source, device, device_type, transition.available, transition.at_s, transition.reason
                )
            )
        return records

    async def _sweep_loop(self) -> None:
        parts = self.parts
        while True:
            # Move pseudonym keys to the current epoch (the old key is destroyed) and enforce
            # retention: expired epochs' rows deleted, their data keys destroyed.
            if await parts.pipeline.keys.advance(parts.buffer, time.time()):
                self._record(parts.pipeline.audit("keys.pseudonym_rotated", "agent", "info"))
            removed = await parts.buffer.sweep()
            if any(removed.values()):
                log.info("daemon.retention_swept", removed=removed)
            await asyncio.sleep(self.config.buffer.sweep_interval_s)

    async def _reload_privacy_state(self) -> str | None:
        """Re-read consent, objection and restriction; on an unreadable state keep the one in
        force and return why."""
        try:
            await self.parts.privacy_state.reload()
        except PrivacyStateError as exc:
            log.error("daemon.privacy_state_unreadable", kept="the state in force", reason=exc.reason)
            return exc.reason
        return None

    # ---- reload (SIGHUP) ----------------------------------------------------------------------

    async def _reload_loop(self) -> None:
        while True:
            await self._reload_requested.wait()
            self._reload_requested.clear()  # signals that come during a reload: one more after it
            await self.reload()

    async def reload(self) -> bool:
        """Re-read and apply what can change without a restart (:mod:`agent.reload`): validated
        first, applied whole or not at all; audited either way. The sources, the pipeline and
        the publisher go on meanwhile, so nothing read or committed is lost. True if applied."""
        self.notifier.reloading()
        log.info("daemon.reloading", config=str(self.loaded.path))
        applied = await self._apply_reload()
        self._reload.reloads += 1
        self._reload.last_reload_ts = time.time()
        self.notifier.ready(self.health_line())
        return applied

    async def _apply_reload(self) -> bool:
        parts = self.parts
        running_policy = self._policy or parts.policy
        try:
            plan = await asyncio.to_thread(plan_reload, self.loaded.path, self.config, running_policy)
        except ConfigError as exc:
            return self._reload_refused(f"{exc.source}: " + "; ".join(str(issue) for issue in exc.issues))
        state_error = await self._reload_privacy_state()
        if state_error is not None:
            return self._reload_refused(f"privacy state: {state_error}")
        if plan.policy_changed:
            # The windows open under the old policy are closed and committed with it.
            self._extra_records.extend(parts.pipeline.adopt_policy(plan.policy))
            self._policy = plan.policy
        self._reload.error = None
        self._reload.restart_needed = plan.restart_needed
        restart = ", ".join(plan.restart_needed) or None
        self._record(
            parts.pipeline.audit(
                "agent.reload",
                "agent",
                "ok",
                details={
                    **await config_change_details(parts.buffer, plan.loaded.config),
                    "policy_changed": plan.policy_changed,
                    "restart_needed": restart,
                },
            )
        )
        if restart:
            log.warning("daemon.reloaded_restart_needed", policy_changed=plan.policy_changed, restart_needed=restart)
        else:
            log.info("daemon.reloaded", policy_changed=plan.policy_changed)
        return True

    def _reload_refused(self, reason: str) -> bool:
        self._reload.error = reason
        log.error("daemon.reload_refused", kept="the previous settings", reason=reason)
        self._record(self.parts.pipeline.audit("agent.reload", "agent", "refused", reason=refusal_reason(reason)))
        return False

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_NOTIFY_INTERVAL_S)
            self.notifier.status(self.health_line())

    # ---- hooks of the parts (agent.assembly.AgentHooks) ---------------------------------------

    def on_connectivity(self, event: str, target: str, reason: str | None) -> None:
        self._record(self.parts.pipeline.connectivity(event, target, reason))

    def health_fields(self) -> dict[str, Any]:
        return {"sources": len(self._slots), "healthy": not self.problems()}

    async def snapshot(self) -> dict[str, Any]:
        """The document ``heatgate status`` shows."""
        parts = self.parts
        now_monotonic = time.monotonic()
        sources = {name: source_status(slot.view(), slot.counters(now_monotonic)) for name, slot in self._slots.items()}
        buffer_stats: dict[str, Any] = to_builtins(await parts.buffer.stats())
        problems = self.problems()
        problems.extend(buffer_problems(buffer_stats.get("alarms", [])))
        broker = dict(parts.publisher.status())
        broker.setdefault("url", self.config.mqtt.url)
        return {
            "gateway": self.config.gateway.id,
            "version": __version__,
            "uptime_s": time.time() - self._started_s,
            "healthy": not problems,
            "problems": problems,
            "sources": sources,
            "broker": broker,
            "buffer": buffer_stats,
            "privacy": parts.privacy_state.describe(),
            "readings_queue": self._readings.qsize(),
            "reload": {
                "reloads": self._reload.reloads,
                "last_reload_ts": self._reload.last_reload_ts,
                "error": self._reload.error,
                "restart_needed": list(self._reload.restart_needed),
            },
            "stray_messages": parts.publisher.stray_messages,
        }

    # ---- health ------------------------------------------------------------------------------

    def problems(self) -> list[str]:
        """What is wrong now, one sentence each (:mod:`agent.health` has the rules)."""
        return health_problems(self._health_snapshot(), HEALTH_LIMITS)

    def health_line(self) -> str:
        return health_line(self.problems(), len(self._slots))

    def _health_snapshot(self) -> HealthSnapshot:
        publisher = self.parts.publisher
        broker = broker_health(publisher.status(), HEALTH_LIMITS)
        self._stray_rate.observe(time.monotonic(), publisher.stray_messages)
        return HealthSnapshot(
            now_s=time.time(),
            sources=tuple(slot.view() for slot in self._slots.values()),
            broker_connected=broker.connected,
            inflight=broker.inflight,
            ack_stall_s=broker.ack_stall_s,
            stray_per_min=self._stray_rate.per_min(),
            unstored=len(self._committer.waiting),
            unstored_dropped=self._committer.dropped,
            reload_error=self._reload.error,
            restart_needed=self._reload.restart_needed,
        )


def device_write_audits(sources: Iterable[Source], pipeline: Pipeline) -> list[NewRecord]:
    """An audit record for each write a driver made on its own from configuration (a profile's
    ``[[init]]`` unlock): declared by the installer, so no operator approval, but never silent.
    The written values are not recorded, only where they went."""
    records: list[NewRecord] = []
    for source in sources:
        if not isinstance(source, ReportsWrites):
            continue
        for write in source.take_writes():
            records.append(
                pipeline.audit(
                    "device.init_write",
                    "profile",
                    "done" if write.error is None else "failed",
                    details={
                        "source": write.source,
                        "device": write.device,
                        "table": write.table,
                        "address": write.address,
                        "registers": write.count,
                    },
                    reason=None if write.error is None else "device refused the write",
                )
            )
    return records
