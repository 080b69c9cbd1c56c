"""The Modbus driver over RTU on a real pseudo-terminal pair, several units on one bus."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from heatgate.agent.config import ModbusDevice, ModbusRtuSource
from heatgate.drivers.modbus.source import make_modbus_source
from heatgate.drivers.reading import Quality, Reading
from heatgate.drivers.sim.modbus import serve_meter_rtu, serve_rtu
from heatgate.drivers.sim.modbus_model import heatpump_device, meter_device
from tests.support.leaks import run_async


def test_meter_over_rtu_pty(tmp_path: Path) -> None:
    link = str(tmp_path / "meter")

    async def main() -> list[Reading]:
        server = await serve_meter_rtu(link=link, baudrate=9600)
        assert Path(link).resolve() == Path(server.path)
        config = ModbusRtuSource(
            name="meter-bus",
            port=link,
            baudrate=9600,
            timeout_s=0.5,
            devices=[ModbusDevice(name="meter1", unit_id=1, profile="sdm630")],
        )
        runner = make_modbus_source(config)
        try:
            return await runner.poll_device(runner.devices["meter1"])
        finally:
            runner.link.close()
            await server.stop()

    got = {r.point: r for r in run_async(main())}
    assert all(r.quality is Quality.OK for r in got.values())
    assert 225 < got["voltage_l1_v"].value < 235  # type: ignore[operator]
    assert 49.9 <= got["frequency_hz"].value <= 50.1  # type: ignore[operator]
    assert got["serial_number"].value == 20230417
    assert got["total_energy_kwh"].value == got["import_energy_kwh"].value + got["export_energy_kwh"].value  # type: ignore[operator]
    assert {r.device_type for r in got.values()} == {"energy-meter"}
    assert not Path(link).exists()  # the simulator removed its link


def test_one_dead_unit_does_not_stall_the_others(tmp_path: Path) -> None:
    link = str(tmp_path / "bus")
    interval_s = 0.25

    async def main() -> tuple[dict[str, Any], dict[str, int]]:
        devices = {1: meter_device(seed=1), 2: heatpump_device(seed=2), 3: meter_device(seed=3)}
        devices[2].offline = True
        server = await serve_rtu(devices, link=link, baudrate=19200)
        config = ModbusRtuSource(
            name="bus",
            port=link,
            baudrate=19200,
            timeout_s=0.4,
            devices=[
                ModbusDevice(name="m1", unit_id=1, profile="sdm630", interval_s=interval_s),
                ModbusDevice(name="hp2", unit_id=2, profile="sim-heatpump", interval_s=interval_s),
                ModbusDevice(name="m3", unit_id=3, profile="sdm630", interval_s=interval_s),
            ],
        )
        runner = make_modbus_source(config, probe_min_s=2.0, probe_max_s=8.0)
        ok_polls: dict[str, int] = {"m1": 0, "hp2": 0, "m3": 0}

        async def sink(batch: Sequence[Reading]) -> None:
            if all(r.quality is Quality.OK for r in batch):
                ok_polls[batch[0].device] += 1

        loop = asyncio.get_running_loop()
        task = asyncio.create_task(runner.run(sink), name="modbus-runner")
        try:
            while not runner.devices["hp2"].backing_off:
                await asyncio.sleep(0.05)
            # From here on, measure: the dead unit is only probed on its slow timer.
            before = dict(ok_polls)
            started = loop.time()
            await asyncio.sleep(2.5)
            elapsed = loop.time() - started
            window = {name: ok_polls[name] - before[name] for name in ok_polls}
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop()
        health = runner.health()
        health["expected_polls"] = elapsed / interval_s
        return health, window

    health, ok_polls = run_async(main())
    devices = health["devices"]
    expected = float(health["expected_polls"])
    assert devices["hp2"]["state"] == "backing_off"
    assert ok_polls["hp2"] == 0
    # The dead unit costs a probe timeout now and then, not two timeouts per cycle: the live
    # ones keep most of their rate. (Without backoff every cycle would spend 2 x 0.4 s on the
    # dead unit, and the live ones would get under a third of theirs.)
    for name in ("m1", "m3"):
        assert ok_polls[name] >= 0.5 * expected, (name, ok_polls, expected)
        assert devices[name]["state"] == "ok"
    assert devices["hp2"]["polls"] < devices["m1"]["polls"] / 2
