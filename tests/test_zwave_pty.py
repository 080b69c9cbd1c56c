"""Z-Wave end to end over a pseudo-terminal: simulated controller -> ZwaveRunner -> readings;
NAK/CAN/missing-ACK retransmission; bad checksums NAKed; unplug and replug; home id never logged."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Sequence
from pathlib import Path

import structlog

from heatgate import logs
from heatgate.agent.config import ZwaveNode, ZwaveSource
from heatgate.drivers.reading import PointKind, Reading
from heatgate.drivers.sim.zwave import ZwaveSimulator
from heatgate.drivers.zwave.source import ZwaveRunner
from tests.support.leaks import run_async

NODES = [
    ZwaveNode(node_id=2, name="living-room", device_type="multisensor"),
    ZwaveNode(node_id=3, name="washing-machine", device_type="energy-switch"),
]
FAST = {"ack_timeout_s": 0.2, "retry_base_s": 0.01, "retry_step_s": 0.05, "response_timeout_s": 1.0}


class Collector:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self.changed = asyncio.Event()

    async def __call__(self, batch: Sequence[Reading]) -> None:
        self.readings.extend(batch)
        self.changed.set()

    async def until(self, predicate: object, timeout_s: float = 15.0) -> None:
        assert callable(predicate)

        async def loop() -> None:
            while not predicate():
                self.changed.clear()
                await self.changed.wait()

        await asyncio.wait_for(loop(), timeout_s)

    def count(self, device: str, point: str) -> int:
        return sum(r.device == device and r.point == point for r in self.readings)


def _runner(path: Path) -> ZwaveRunner:
    return ZwaveRunner(
        ZwaveSource(name="zwave", port=str(path), nodes=NODES),
        reopen_min_s=0.05,
        reopen_max_s=0.2,
        reset_wait_s=0.5,
        host_options=FAST,
    )


def test_sim_drives_runner_nodes_mapped_secure_counted(tmp_path: Path) -> None:
    async def main() -> tuple[ZwaveRunner, ZwaveSimulator, Collector]:
        sim = ZwaveSimulator(link=tmp_path / "zw", interval_s=0.05, bad_checksum_rate=0.1, seed=3)
        await sim.start()
        runner = _runner(tmp_path / "zw")
        sink = Collector()
        task = asyncio.create_task(runner.run(sink), name="zwave-runner")
        try:
            await sink.until(
                lambda: (
                    sink.count("washing-machine", "energy_kwh") >= 3
                    and runner.unsupported_secure >= 2
                    and runner.stats.checksum_errors >= 1
                )
            )
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
        return runner, sim, sink

    runner, sim, sink = run_async(main())
    by = {(r.device, r.point): r for r in sink.readings}
    home = by[("controller", "home_id")]
    assert (home.kind, home.value) == (PointKind.IDENTIFIER, "e3a1c0de")
    temp = by[("living-room", "air_temperature_c")]
    assert temp.device_type == "multisensor" and 20.5 <= float(temp.value or 0) <= 21.4
    assert by[("living-room", "humidity_pct")].unit == "%"
    assert by[("living-room", "battery_pct")].value == 90
    kwh = by[("washing-machine", "energy_kwh")]
    assert (kwh.device_type, kwh.kind) == ("energy-switch", PointKind.COUNTER)
    assert by[("washing-machine", "power_w")].kind is PointKind.MEASUREMENT
    assert not any(r.device == "node-4" for r in sink.readings)  # the secure node: counted, not decoded
    health = runner.health()
    assert health["nodes"]["node-4"]["node_id"] == 4
    assert health["checksum_errors"] <= sim.stats.bad_checksums_sent
    # Every good frame was ACKed, every corrupt one NAKed (plus the start-up NAK).
    assert sim.stats.host_naks >= 1 + health["checksum_errors"]
    assert sim.stats.host_acks >= health["frames_ok"] - 1


def test_nak_can_and_missing_ack_are_retransmitted(tmp_path: Path) -> None:
    async def main() -> tuple[ZwaveRunner, ZwaveSimulator]:
        sim = ZwaveSimulator(
            link=tmp_path / "zw", interval_s=0.05, nak_rate=0.15, can_rate=0.1, drop_ack_rate=0.1, seed=11
        )
        await sim.start()
        runner = _runner(tmp_path / "zw")
        sink = Collector()
        task = asyncio.create_task(runner.run(sink), name="zwave-runner")
        try:
            await sink.until(lambda: sink.count("controller", "home_id") >= 1)
            await sink.until(lambda: sink.count("living-room", "battery_pct") >= 1)
            # Force more start-ups so that every fault shows up: replug a few times.
            for _ in range(4):
                sim.unplug()
                sim.plug()
                before = sink.count("controller", "home_id")
                await sink.until(lambda b=before: sink.count("controller", "home_id") > b)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
        return runner, sim

    runner, sim = run_async(main())
    h = runner.health()
    # Each fault the controller injected was seen by the host (one may be in flight at the end).
    assert sim.stats.naks_sent - 1 <= h["naks"] <= sim.stats.naks_sent
    assert sim.stats.cans_sent - 1 <= h["cans"] <= sim.stats.cans_sent
    assert sim.stats.acks_dropped - 1 <= h["ack_timeouts"] <= sim.stats.acks_dropped
    assert h["retransmissions"] >= 1
    assert sim.stats.naks_sent + sim.stats.cans_sent + sim.stats.acks_dropped >= 1


def test_retry_delays_follow_the_serial_api() -> None:
    runner_host = __import__("heatgate.drivers.zwave.host", fromlist=["ZwaveHost"])
    host = runner_host.ZwaveHost(link=None, on_request=None)
    assert [host.retry_delay_s(n) for n in range(3)] == [0.1, 1.1, 2.1]
    assert host.max_tries == 3


def test_unplug_replug_logged_once_each_way_and_home_id_never_logged(tmp_path: Path) -> None:
    stream = io.StringIO()
    logs.configure(level="debug", stream=stream, json=True)
    home = bytes.fromhex("c0ffee42")

    async def main() -> tuple[ZwaveRunner, Collector]:
        sim = ZwaveSimulator(link=tmp_path / "zw", interval_s=0.05, home_id=home)
        await sim.start()
        runner = _runner(tmp_path / "zw")
        sink = Collector()
        task = asyncio.create_task(runner.run(sink), name="zwave-runner")
        try:
            await sink.until(lambda: runner.unsupported_secure >= 1)
            sim.unplug()
            while runner.port_state != "unavailable":
                await asyncio.sleep(0.02)
        finally:
            pass
        try:
            await asyncio.sleep(0.4)  # failed reopen attempts, none logged
            sim.plug()
            before = sink.count("living-room", "humidity_pct")
            await sink.until(lambda: sink.count("living-room", "humidity_pct") > before)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await sim.stop()
        return runner, sink

    try:
        runner, sink = run_async(main())
    finally:
        structlog.reset_defaults()
    out = stream.getvalue()
    assert runner.port_losses == 1
    assert out.count('"zwave.port_lost"') == 1
    assert out.count('"zwave.port_unavailable"') == 0
    assert out.count('"zwave.port_open"') == 2
    assert "zwave.unsupported_secure" in out
    assert {r.value for r in sink.readings if r.point == "home_id"} == {"c0ffee42"}
    for text in ("c0ffee42", "C0FFEE42", str(int.from_bytes(home, "big")), "c0:ff:ee:42"):
        assert text not in out
