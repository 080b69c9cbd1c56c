"""The daemon: one asyncio loop, named tasks in one task group.

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
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heatgate import __version__
from heatgate.agent.config import LoadedConfig, SourceConfig
from heatgate.agent.health import CounterRate, HealthLimits, HealthSnapshot, SourceView, source_error, source_state
from heatgate.agent.health import problems as health_problems
from heatgate.agent.sdnotify import LoopWatchdog, Notifier, watchdog_interval_s
from heatgate.agent.statelock import StateLock, StateLocked
from heatgate.agent.status import StatusServer
from heatgate.backoff import Backoff
from heatgate.buffer.api import NewRecord
from heatgate.drivers.reading import DriverError, Reading, Source
from heatgate.logs import get_logger

__all__ = ["Agent", "StartupError", "build_source"]

log = get_logger("heatgate.daemon")

READING_QUEUE_BATCHES = 4096
FLUSH_INTERVAL_S = 5.0
STATUS_NOTIFY_INTERVAL_S = 30.0
ACK_STALL_S = 30.0
SHUTDOWN_S = 12.0
"""A clean stop gets this long (systemd's TimeoutStopSec is 20 s)."""
UNSTORED_MAX = 10_000
"""Records a full disk could not take, held in memory until it can (oldest dropped beyond this)."""
HEALTH_LIMITS = HealthLimits()


class StartupError(Exception):
    """The agent cannot start; ``exit_code`` is 2 for bad config/keys, 1 otherwise."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def build_source(config: SourceConfig) -> Source:
    """The driver for one configured source."""
    from heatgate.agent.config import ModbusRtuSource, ModbusTcpSource, P1Source, ZwaveSource

    if isinstance(config, ModbusTcpSource | ModbusRtuSource):
        from heatgate.drivers.modbus.source import make_modbus_source

        return make_modbus_source(config)
    if isinstance(config, P1Source):
        from heatgate.drivers.p1.source import P1Runner

        return P1Runner(config)
    if isinstance(config, ZwaveSource):
        from heatgate.drivers.zwave.source import ZwaveRunner

        return ZwaveRunner(config)
    raise AssertionError(f"unknown source type {config!r}")


@dataclass
class _SourceSlot:
    source: Source
    type: str
    restarts: int = 0
    last_error: str | None = None
    state: str = "starting"
    backoff: Backoff = field(default_factory=lambda: Backoff(min_s=1.0, max_s=60.0))
    readings: int = 0
    last_reading_ts: float | None = None
    quality: dict[str, int] = field(default_factory=dict)
    first_reading_monotonic: float | None = None


class Agent:
    """Everything ``heatgate run`` does. Construct, then ``await run()`` for the exit code."""

    def __init__(self, loaded: LoadedConfig, *, notifier: Notifier | None = None) -> None:
        self.loaded = loaded
        self.config = loaded.config
        self.notifier = notifier or Notifier()
        self._stop = asyncio.Event()
        self._readings: asyncio.Queue[Sequence[Reading] | None] = asyncio.Queue(READING_QUEUE_BATCHES)
        self._extra_records: list[NewRecord] = []
        self._started_s = time.time()
        self._slots: dict[str, _SourceSlot] = {}
        self._readings_dropped = 0
        self._unstored: list[NewRecord] = []
        self._unstored_dropped = 0
        self._stray_rate = CounterRate()
        self._reload_requested = asyncio.Event()
        self._reload_error: str | None = None
        self._restart_needed: tuple[str, ...] = ()
        self._reloads = 0
        self._last_reload_ts: float | None = None
        self.buffer: Any = None
        self.pipeline: Any = None
        self.publisher: Any = None
        self.privacy_state: Any = None
        self.policy: Any = None
        self.commands: Any = None

    # ---- start-up -------------------------------------------------------------------------

    async def _open(self) -> None:
        from heatgate.agent.privacy.policy import load_policy
        from heatgate.buffer.adapter import open_buffer
        from heatgate.buffer.errors import BufferFault
        from heatgate.buffer.keys import load_master_key
        from heatgate.typedload import ConfigError

        config = self.config
        try:
            self.policy = load_policy(config.policy_path)
        except ConfigError as exc:
            raise StartupError(exc.render(), exit_code=2) from None
        try:
            master_key = load_master_key(config.master_key_path, config.keys.master_key_credential)
        except BufferFault as exc:
            raise StartupError(str(exc), exit_code=2) from None
        try:
            self.buffer = await open_buffer(
                config.buffer_path,
                master_key,
                cap_bytes=config.buffer.cap_bytes,
                commit_interval_s=config.buffer.commit_interval_s,
                cipher=config.buffer.cipher,
                retention_s=self.policy.retention_s(),
            )
        except BufferFault as exc:
            raise StartupError(str(exc), exit_code=2) from None
        finally:
            del master_key

        from heatgate.agent.privacy.pipeline import Pipeline
        from heatgate.agent.privacy.pseudonym import PseudonymKeys
        from heatgate.agent.privacy.state import PrivacyState

        self.privacy_state = await PrivacyState.load(self.buffer)
        keys = await PseudonymKeys.load(self.buffer, epoch_days=config.privacy.pseudonym_epoch_days)
        self.pipeline = Pipeline(self.policy, gateway=config.gateway, keys=keys, state=self.privacy_state)

        from heatgate.agent.publish.publisher import Publisher

        self.publisher = Publisher(
            config.mqtt,
            config.gateway.id,
            self.buffer,
            version=__version__,
            health=self._health_line_fields,
            restricted=self.privacy_state.restricted_streams,
            on_connectivity=self._on_connectivity,
        )
        for source_config in config.sources:
            self._slots[source_config.name] = _SourceSlot(
                source=build_source(source_config),
                type=source_config.__struct_config__.tag,  # type: ignore[arg-type]
            )
        self.commands = await self._build_commands()
        if self.commands is not None:
            self.publisher.on_command = self._on_command

    @property
    def sources(self) -> dict[str, Source]:
        return {name: slot.source for name, slot in self._slots.items()}

    async def _build_commands(self) -> Any:
        if self.config.keys.command_public_key_file is None:
            log.info("no command key pinned: remote commands are disabled")
            return None
        from heatgate.agent.command_wiring import build_processor
        from heatgate.agent.commands.errors import CommandError

        try:
            return await build_processor(self)
        except CommandError as exc:
            raise StartupError(f"remote commands: {exc}", exit_code=2) from None

    # ---- the tasks ------------------------------------------------------------------------

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
            return await self._run_locked()
        finally:
            lock.release()

    @staticmethod
    def _cannot_start(exc: StartupError) -> int:
        log.error("cannot start", reason=str(exc))
        sys.stderr.write(f"heatgate: {exc}\n")
        sys.stderr.flush()
        return exc.exit_code

    async def _run_locked(self) -> int:
        try:
            await self._open()
        except StartupError as exc:
            return self._cannot_start(exc)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stop.set)
        status_server = StatusServer(self.config.status_socket_path, self.snapshot)
        await status_server.start()
        self._record(
            self.pipeline.audit(
                "agent.start",
                "agent",
                "info",
                details={"version": __version__, "config_sha256": self.loaded.sha256, "sources": len(self._slots)},
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
                publisher_task = group.create_task(self.publisher.run(), name="publisher")
                watchdog_s = watchdog_interval_s()
                if watchdog_s:
                    watchdog = LoopWatchdog(self.notifier, stall_s=watchdog_s)
                    helpers.append(group.create_task(watchdog.run(), name="watchdog"))
                self.notifier.ready(self.health_line())
                log.info("agent started", gateway=self.config.gateway.id, sources=len(self._slots), version=__version__)

                await self._stop.wait()
                log.info("stopping")
                self.notifier.stopping()
                try:
                    async with asyncio.timeout(SHUTDOWN_S):
                        await self._shut_down(source_tasks, pipeline_task)
                except TimeoutError:
                    # systemd would kill us at TimeoutStopSec: stop now, with what is committed.
                    exit_code = 1
                    log.error("clean shutdown took too long; stopping anyway", after_s=SHUTDOWN_S)
                for task in [*source_tasks, pipeline_task, publisher_task, *helpers]:
                    task.cancel()
        finally:
            await status_server.close()
            await self.buffer.close()
            self.notifier.close()
        log.info("stopped")
        return exit_code

    async def _shut_down(self, source_tasks: list[asyncio.Task[None]], pipeline_task: asyncio.Task[None]) -> None:
        """Stop polling, run what the sources delivered through the pipeline, close the open
        windows, commit, publish ``offline``."""
        for task in source_tasks:
            task.cancel()
        await asyncio.gather(*source_tasks, return_exceptions=True)
        await self._readings.put(None)  # the pipeline drains what the sources delivered
        await pipeline_task
        if self.commands is not None:
            await self.commands.close()  # the refusal summary of the last minute, before agent.stop
        closing = self.pipeline.flush(force=True)
        closing.append(self.pipeline.audit("agent.stop", "agent", "info"))
        await self._store(closing)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.publisher.stop(), timeout=5.0)

    async def _supervise(self, name: str, slot: _SourceSlot) -> None:
        """Run one source for ever; restart it with backoff when it fails."""
        while True:
            slot.state = "running"
            try:
                await slot.source.run(self._sink_for(slot))
                slot.state = "ended"
                return
            except DriverError as exc:
                slot.last_error = str(exc)
            except OSError as exc:
                slot.last_error = f"{type(exc).__name__}: {exc}"
            slot.restarts += 1
            slot.state = "restarting"
            delay_s = slot.backoff.next_delay_s()
            log.warning("source failed; restarting", source=name, error=slot.last_error, in_s=round(delay_s, 1))
            self._record(self.pipeline.connectivity("source_down", name, slot.last_error))
            await asyncio.sleep(delay_s)

    def _sink_for(self, slot: _SourceSlot) -> Callable[[Sequence[Reading]], Awaitable[None]]:
        """The source's sink: counts what it delivered (for status), then queues it."""

        async def sink(readings: Sequence[Reading]) -> None:
            if readings:
                if slot.first_reading_monotonic is None:
                    slot.first_reading_monotonic = time.monotonic()
                slot.readings += len(readings)
                slot.last_reading_ts = time.time()
                for reading in readings:
                    key = reading.quality.value
                    slot.quality[key] = slot.quality.get(key, 0) + 1
            await self._readings.put(readings)

        return sink

    async def _pipeline_loop(self) -> None:
        """Readings -> records -> committed buffer; wakes the publisher."""
        while True:
            batch = await self._readings.get()
            batches = [batch]
            while not self._readings.empty():  # take what else is waiting: fewer, bigger commits
                batches.append(self._readings.get_nowait())
            done = any(b is None for b in batches)
            records: list[NewRecord] = []
            for readings in batches:
                if readings:
                    records.extend(self.pipeline.process(readings))
            records.extend(self._take_extra())
            if records or self._unstored:
                await self._store(records)
                self.publisher.wake()
            if done:
                return

    async def _store(self, records: list[NewRecord]) -> None:
        """Commit records. What a full disk leaves unstored (records of a protected stream, with
        nothing left to evict) is kept in memory, bounded, and offered again with the next batch:
        the agent goes on and says so in its status."""
        from heatgate.buffer.errors import RecordsNotStored

        batch = self._unstored + records
        self._unstored = []
        try:
            await self.buffer.put(batch)
        except RecordsNotStored as exc:
            kept = [r for r in batch if r.id in exc.ids]
            overflow = max(0, len(kept) - UNSTORED_MAX)
            self._unstored_dropped += overflow
            self._unstored = kept[overflow:]
            log.error(
                "disk full: records kept in memory until there is room",
                waiting=len(self._unstored),
                dropped=self._unstored_dropped,
                streams=exc.per_stream,
            )

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
        while True:
            await asyncio.sleep(FLUSH_INTERVAL_S)
            # `heatgate privacy` (another process) may have changed consent, objection or
            # restriction: pick that up within one interval.
            await self._reload_privacy_state()
            self._stray_rate.observe(time.monotonic(), self._stray_messages())
            records = self.pipeline.flush()
            if records:
                self._extra_records.extend(records)
                with contextlib.suppress(asyncio.QueueFull):
                    self._readings.put_nowait(())

    async def _sweep_loop(self) -> None:
        while True:
            # Move pseudonym keys to the current epoch (the old key is destroyed) and enforce
            # retention: expired epochs' rows deleted, their data keys destroyed.
            if await self.pipeline.keys.advance(self.buffer, time.time()):
                self._record(self.pipeline.audit("keys.pseudonym_rotated", "agent", "info"))
            removed = await self.buffer.sweep()
            if any(removed.values()):
                log.info("retention sweep", removed=removed)
            await asyncio.sleep(self.config.buffer.sweep_interval_s)

    async def _reload_privacy_state(self) -> str | None:
        """Re-read consent, objection and restriction; on an unreadable state keep the one in
        force and return why."""
        from heatgate.agent.privacy.state import PrivacyStateError

        try:
            await self.privacy_state.reload()
        except PrivacyStateError as exc:
            log.error("privacy state unreadable; keeping the one in force", reason=exc.reason)
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
        log.info("reloading", config=str(self.loaded.path))
        applied = await self._apply_reload()
        self._reloads += 1
        self._last_reload_ts = time.time()
        self.notifier.ready(self.health_line())
        return applied

    async def _apply_reload(self) -> bool:
        from heatgate.agent.reload import plan_reload
        from heatgate.typedload import ConfigError

        try:
            plan = await asyncio.to_thread(plan_reload, self.loaded.path, self.config, self.policy)
        except ConfigError as exc:
            return self._reload_refused(f"{exc.source}: " + "; ".join(str(issue) for issue in exc.issues))
        state_error = await self._reload_privacy_state()
        if state_error is not None:
            return self._reload_refused(f"privacy state: {state_error}")
        if plan.policy_changed:
            # The windows open under the old policy are closed and committed with it.
            self._extra_records.extend(self.pipeline.adopt_policy(plan.policy))
            self.policy = plan.policy
        self._reload_error = None
        self._restart_needed = plan.restart_needed
        restart = ", ".join(plan.restart_needed) or None
        self._record(
            self.pipeline.audit(
                "agent.reload",
                "agent",
                "ok",
                details={
                    "config_sha256": plan.loaded.sha256,
                    "policy_changed": plan.policy_changed,
                    "restart_needed": restart,
                },
            )
        )
        if restart:
            log.warning(
                "reloaded; some changes need a restart", policy_changed=plan.policy_changed, restart_needed=restart
            )
        else:
            log.info("reloaded", policy_changed=plan.policy_changed)
        return True

    def _reload_refused(self, reason: str) -> bool:
        self._reload_error = reason
        log.error("reload refused; running on the previous settings", reason=reason)
        self._record(self.pipeline.audit("agent.reload", "agent", "refused", reason=reason[:500]))
        return False

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(STATUS_NOTIFY_INTERVAL_S)
            self.notifier.status(self.health_line())

    # ---- connectivity and commands ----------------------------------------------------------

    def _on_connectivity(self, event: str, target: str, reason: str | None) -> None:
        self._record(self.pipeline.connectivity(event, target, reason))

    async def _on_command(self, topic: str, payload: bytes, properties: dict[str, Any]) -> None:
        from heatgate.agent.command_wiring import answer

        await answer(self, topic, payload, properties)

    # ---- health ------------------------------------------------------------------------------

    def _health_line_fields(self) -> dict[str, Any]:
        return {"sources": len(self._slots), "healthy": not self.problems()}

    def problems(self) -> list[str]:
        """What is wrong now, one sentence each (:mod:`agent.health` has the rules)."""
        return health_problems(self._health_snapshot(), HEALTH_LIMITS)

    def _health_snapshot(self) -> HealthSnapshot:
        connected: bool | None = None
        inflight = 0
        stall_s: float | None = None
        stray_per_min: float | None = None
        if self.publisher is not None:
            status = self.publisher.status()
            connected = bool(status.get("connected"))
            inflight = int(status.get("inflight") or 0)
            stall_s = self._acknowledgement_stall_s(status)
            self._stray_rate.observe(time.monotonic(), self._stray_messages())
            stray_per_min = self._stray_rate.per_min()
        return HealthSnapshot(
            now_s=time.time(),
            sources=tuple(self._source_view(name, slot) for name, slot in self._slots.items()),
            broker_connected=connected,
            inflight=inflight,
            ack_stall_s=stall_s,
            stray_per_min=stray_per_min,
            unstored=len(self._unstored),
            unstored_dropped=self._unstored_dropped,
            reload_error=self._reload_error,
            restart_needed=self._restart_needed,
        )

    @staticmethod
    def _source_view(name: str, slot: _SourceSlot) -> SourceView:
        return SourceView(name=name, slot_state=slot.state, health=slot.source.health(), last_error=slot.last_error)

    def _stray_messages(self) -> int:
        """Messages that arrived on topics the gateway does not serve (counted by the publisher)."""
        return self.publisher.stray_messages if self.publisher is not None else 0

    def _acknowledgement_stall_s(self, status: dict[str, Any]) -> float | None:
        """Seconds the broker has kept messages waiting for their PUBACK (a broker that accepts the
        connection but never acknowledges), or None if it is fine. Once the publisher has dropped a
        connection for a missing PUBACK, the stall lasts until the next PUBACK; before that it is the
        age of the oldest unacknowledged message (never the length of a quiet spell)."""
        if status.get("puback_timeouts_in_row"):
            return float(status.get("since_last_ack_s") or 0.0)
        oldest_s = status.get("oldest_unacked_age_s")
        return float(oldest_s) if oldest_s is not None and oldest_s >= ACK_STALL_S else None

    def health_line(self) -> str:
        problems = self.problems()
        return "ok: " + f"{len(self._slots)} source(s)" if not problems else "degraded: " + "; ".join(problems)

    async def snapshot(self) -> dict[str, Any]:
        """The document ``heatgate status`` shows."""
        from msgspec import to_builtins

        sources = {}
        for name, slot in self._slots.items():
            view = self._source_view(name, slot)
            health = dict(view.health)
            health.setdefault("type", slot.type)
            health["state"] = source_state(view)
            error = source_error(view)
            health["restarts"] = slot.restarts
            health["readings"] = slot.readings
            health["last_reading_ts"] = slot.last_reading_ts
            health["quality"] = dict(slot.quality)
            if slot.first_reading_monotonic is not None:
                minutes = max(time.monotonic() - slot.first_reading_monotonic, 1.0) / 60
                health["readings_per_min"] = round(slot.readings / minutes, 1)
            if error or slot.last_error:
                health["last_error"] = error or slot.last_error
            sources[name] = health
        buffer_stats = to_builtins(await self.buffer.stats())
        problems = self.problems()
        problems.extend(f"buffer alarm: {alarm}" for alarm in buffer_stats.get("alarms", []))
        broker = dict(self.publisher.status())
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
            "privacy": self.privacy_state.describe(),
            "readings_queue": self._readings.qsize(),
            "reload": {
                "reloads": self._reloads,
                "last_reload_ts": self._last_reload_ts,
                "error": self._reload_error,
                "restart_needed": list(self._restart_needed),
            },
            "stray_messages": self._stray_messages(),
        }
