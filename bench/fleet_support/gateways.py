"""Simulated gateways: heatgate's real buffer, privacy pipeline and publisher, a synthetic source.

One :class:`SimGateway` is what ``heatgate run`` wires for one box (see :mod:`agent.daemon`),
minus the drivers: its own identity, state directory, master key, encrypted SQLite buffer
(with its writer thread), pseudonym keys, privacy state, pipeline and publisher (its paho
socket on the event loop: no network thread). Many share one process and one event loop.

The synthetic source emits ``points`` heat-pump measurements every ``tick_s`` and now and then
a fault code; connectivity events become records as in the daemon. Every record id put into
the buffer is kept in :attr:`SimGateway.produced`, so that the bench can check that each one
reached the backend.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heatgate.agent.config import GatewayConfig, MqttConfig
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.policy import Policy
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.state import PrivacyState
from heatgate.agent.publish.publisher import Publisher
from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.buffer.api import NewRecord
from heatgate.drivers.reading import PointKind, Reading

__all__ = ["GatewayParams", "SimGateway"]

POINTS = (
    "flow_temp_c",
    "return_temp_c",
    "outdoor_temp_c",
    "power_w",
    "cop",
    "dhw_temp_c",
    "pressure_bar",
    "compressor_hz",
)


@dataclass(frozen=True)
class GatewayParams:
    """What every simulated gateway of a run shares."""

    points: int = 3
    tick_s: float = 1.0
    fault_every_s: float = 120.0
    """Mean time between fault-code changes (exponential)."""
    cap_bytes: int = 32 * 1024 * 1024
    commit_interval_s: float = 1.0
    reconnect_min_s: float = 1.0
    reconnect_max_s: float = 30.0
    protocol: str = "3.1.1"
    inflight_max: int = 32


@dataclass
class SimGateway:
    gateway_id: str
    state_dir: Path
    mqtt_url: str
    params: GatewayParams
    policy: Policy
    produced: list[str] = field(default_factory=list)
    connects: list[float] = field(default_factory=list)
    """Wall-clock times (s since the epoch) of every successful connect."""
    disconnects: list[float] = field(default_factory=list)
    buffer: AsyncBuffer | None = None
    pipeline: Pipeline | None = None
    publisher: Publisher | None = None
    _extra: list[NewRecord] = field(default_factory=list)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _fault_code: int = 0

    async def open(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.buffer = await open_buffer(
            self.state_dir / "buffer.db",
            os.urandom(32),
            cap_bytes=self.params.cap_bytes,
            commit_interval_s=self.params.commit_interval_s,
            retention_s=self.policy.retention_s(),
        )
        state = await PrivacyState.load(self.buffer)
        keys = await PseudonymKeys.load(self.buffer, epoch_days=30)
        gateway = GatewayConfig(id=self.gateway_id, region="NL-UT", state_dir=str(self.state_dir))
        self.pipeline = Pipeline(self.policy, gateway=gateway, keys=keys, state=state)
        mqtt = MqttConfig(
            url=self.mqtt_url,
            protocol=self.params.protocol,  # type: ignore[arg-type]
            reconnect_min_s=self.params.reconnect_min_s,
            reconnect_max_s=self.params.reconnect_max_s,
            inflight_max=self.params.inflight_max,
            keepalive_s=30,
        )
        self.publisher = Publisher(
            mqtt,
            self.gateway_id,
            self.buffer,
            version="fleet",
            health=dict,
            restricted=state.restricted_streams,
            on_connectivity=self._on_connectivity,
        )

    def start(self) -> None:
        assert self.publisher is not None
        self._tasks = [
            asyncio.create_task(self.publisher.run(), name=f"publisher:{self.gateway_id}"),
            asyncio.create_task(self._source(), name=f"source:{self.gateway_id}"),
        ]

    def _on_connectivity(self, event: str, target: str, reason: str | None) -> None:
        now = time.time()
        if event == "connected":
            self.connects.append(now)
        elif event == "disconnected":
            self.disconnects.append(now)
        assert self.pipeline is not None
        self._extra.append(self.pipeline.connectivity(event, target, reason))

    def _readings(self, now: float, rng: random.Random) -> list[Reading]:
        readings = [
            Reading(
                source="sim",
                device="hp1",
                device_type="heat-pump",
                point=point,
                kind=PointKind.MEASUREMENT,
                value=round(rng.uniform(20.0, 60.0), 2),
                ts=now,
                unit="x",
            )
            for point in POINTS[: self.params.points]
        ]
        if rng.random() < self.params.tick_s / self.params.fault_every_s:
            self._fault_code = 0 if self._fault_code else rng.randint(100, 199)
        readings.append(
            Reading(
                source="sim",
                device="hp1",
                device_type="heat-pump",
                point="fault_code",
                kind=PointKind.FAULT,
                value=self._fault_code,
                ts=now,
            )
        )
        return readings

    async def _put(self, records: Sequence[NewRecord]) -> None:
        assert self.buffer is not None and self.publisher is not None
        if not records:
            return
        # Counted before the await: a put cancelled while waiting for its commit may still commit.
        self.produced.extend(r.id for r in records)
        await self.buffer.put(records)
        self.publisher.wake()

    async def _source(self) -> None:
        assert self.pipeline is not None
        rng = random.Random(self.gateway_id)
        await asyncio.sleep(rng.uniform(0, self.params.tick_s))  # gateways do not tick in lockstep
        while True:
            now = time.time()
            records = self.pipeline.process(self._readings(now, rng))
            records.extend(self.pipeline.flush(now))
            records.extend(self._take_extra())
            await self._put(records)
            await asyncio.sleep(self.params.tick_s)

    def _take_extra(self) -> list[NewRecord]:
        extra, self._extra = self._extra, []
        return extra

    async def stop_source(self) -> None:
        """Stop the source; close the open windows and commit them (as the daemon does on SIGTERM)."""
        assert self.pipeline is not None
        if self._tasks:
            source = self._tasks.pop()
            source.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await source
        await self._put(self.pipeline.flush(force=True) + self._take_extra())

    async def queued(self) -> int:
        assert self.buffer is not None
        return await self.buffer.count()

    async def close(self) -> None:
        """Publish ``offline``, disconnect, close the buffer. Records still queued stay on disk."""
        if self.publisher is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.publisher.stop(), 5.0)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        # Connectivity records made while stopping are not published any more: not "produced".
        self._extra.clear()
        if self.buffer is not None:
            await self.buffer.close()

    def status(self) -> dict[str, Any]:
        assert self.publisher is not None
        return self.publisher.status()
