"""P1 end to end over a pseudo-terminal: simulator -> P1Runner -> readings; unplug and replug;
equipment ids never in a log line."""

from __future__ import annotations

import asyncio
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import pytest
import structlog

from heatgate import logs
from heatgate.agent.config import P1Source
from heatgate.drivers.p1.source import P1Runner, serial_settings_for
from heatgate.drivers.reading import PointKind, Reading
from heatgate.drivers.sim.p1 import P1Simulator
from heatgate.drivers.sim.p1_telegram import MeterState
from tests.support.leaks import run_async


class Collector:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.batches = 0
        self.changed = asyncio.Event()

    async def __call__(self, batch: Sequence[Reading]) -> None:
        self.readings.extend(batch)
        self.batches += 1
        self.changed.set()

    async def wait_for(self, batches: int, timeout_s: float = 10.0) -> None:
        async def loop() -> None:
            while self.batches < batches:
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout_s)


async def _wait_state(runner: P1Runner, state: str, timeout_s: float = 10.0) -> None:
    async def loop() -> None:
        while runner.port_state != state:
            await asyncio.sleep(0.02)

    await asyncio.wait_for(loop(), timeout_s)


def test_serial_settings_follow_the_version() -> None:
    old = serial_settings_for(P1Source(name="p", port="/dev/x", dsmr_version="3"))
    new = serial_settings_for(P1Source(name="p", port="/dev/x", dsmr_version="5"))
    forced = serial_settings_for(P1Source(name="p", port="/dev/x", dsmr_version="5", serial_settings="7E1"))
    assert (old.baudrate, old.bytesize, old.parity) == (9600, 7, "E")
    assert (new.baudrate, new.bytesize, new.parity) == (115200, 8, "N")
    assert (forced.baudrate, forced.bytesize, forced.parity) == (115200, 7, "E")


@pytest.mark.parametrize("version", ["3", "5"])
def test_sim_drives_runner_with_faults_counted(tmp_path: Path, version: Literal["3", "5"]) -> None:
    async def main() -> None:
        sim = P1Simulator(
            dsmr_version=version,
            interval_s=0.05,
            link=tmp_path / "p1",
            bad_crc_rate=0.3 if version == "5" else 0.0,
            garbage_rate=0.3,
            seed=7,
        )
        await sim.start()
        runner = P1Runner(P1Source(name="smartmeter", port=str(tmp_path / "p1"), dsmr_version=version))
        sink = Collector()
        task = asyncio.create_task(runner.run(sink), name="p1-runner")
        try:
            await sink.wait_for(8)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
        health = runner.health()
        assert health["telegrams_ok"] >= 8
        if version == "5":
            assert sim.stats.bad_crc_sent > 0 and health["crc_errors"] > 0
        assert health["crc_errors"] <= sim.stats.bad_crc_sent
        assert health["garbage_bytes"] > 0 and sim.stats.garbage_bursts > 0
        assert health["port_state"] == "closed" and health["last_telegram_ts"] is not None
        points = {(r.device, r.point) for r in sink.readings}
        assert {("meter", "energy_delivered_t1_kwh"), ("meter", "equipment_id"), ("gas", "gas_delivered_m3")} <= points
        kwh = [float(r.value) for r in sink.readings if r.point == "energy_delivered_t2_kwh"]  # type: ignore[arg-type]
        assert kwh == sorted(kwh)  # counters only grow: no telegram was mixed with another

    run_async(main())


def test_unplug_and_replug_is_survived_and_logged_once_each_way(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(level="info", stream=stream, json=True)

    async def main() -> None:
        sim = P1Simulator(interval_s=0.05, link=tmp_path / "p1")
        await sim.start()
        runner = P1Runner(P1Source(name="smartmeter", port=str(tmp_path / "p1")), reopen_min_s=0.05, reopen_max_s=0.2)
        sink = Collector()
        task = asyncio.create_task(runner.run(sink), name="p1-runner")
        try:
            await sink.wait_for(2)
            sim.unplug()
            await _wait_state(runner, "unavailable")
            await asyncio.sleep(0.5)  # several failed reopen attempts, none logged
            assert not (tmp_path / "p1").exists()
            sim.plug()
            before = sink.batches
            await sink.wait_for(before + 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
        assert runner.health()["port_losses"] == 1

    try:
        run_async(main())
    finally:
        structlog.reset_defaults()
    events = [line for line in stream.getvalue().splitlines()]
    assert sum('"p1.port_lost"' in e for e in events) == 1
    assert sum('"p1.port_unavailable"' in e for e in events) == 0  # lost, not "never there"
    assert sum('"p1.port_open"' in e for e in events) == 2
    assert '"back": true' in events[-1] or any('"back": true' in e for e in events)


def test_port_missing_at_start_is_waited_for(tmp_path: Path) -> None:
    async def main() -> None:
        runner = P1Runner(P1Source(name="smartmeter", port=str(tmp_path / "p1")), reopen_min_s=0.05, reopen_max_s=0.1)
        sink = Collector()
        task = asyncio.create_task(runner.run(sink), name="p1-runner")
        sim = P1Simulator(interval_s=0.05, link=tmp_path / "p1")
        try:
            await _wait_state(runner, "unavailable")
            await sim.start()
            await sink.wait_for(1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()

    run_async(main())


def test_equipment_ids_never_logged(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Canary: planted equipment ids reach the readings but no log line (structlog or stdlib)."""
    canary = "43414E4152595F4551554950"
    gas_canary = "43414E4152595F474153"
    stream = io.StringIO()
    logs.configure(level="debug", stream=stream, json=True)
    caplog.set_level(logging.DEBUG)

    async def main() -> list[Reading]:
        sim = P1Simulator(
            interval_s=0.05,
            link=tmp_path / "p1",
            bad_crc_rate=0.5,
            garbage_rate=0.5,
            seed=1,
            state=MeterState(equipment_id=canary, gas_equipment_id=gas_canary),
        )
        await sim.start()
        runner = P1Runner(P1Source(name="smartmeter", port=str(tmp_path / "p1")), reopen_min_s=0.05, reopen_max_s=0.1)
        sink = Collector()
        task = asyncio.create_task(runner.run(sink), name="p1-runner")
        try:
            await sink.wait_for(3)
            sim.unplug()
            sim.plug()
            await sink.wait_for(sink.batches + 2)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
        return sink.readings

    try:
        readings = run_async(main())
    finally:
        structlog.reset_defaults()
    ids = {r.value for r in readings if r.kind is PointKind.IDENTIFIER}
    assert ids == {canary, gas_canary}
    output = stream.getvalue() + caplog.text
    assert "p1.checksum_error" in output  # the logs did run
    for value in (canary, gas_canary, canary.lower()):
        assert value not in output
