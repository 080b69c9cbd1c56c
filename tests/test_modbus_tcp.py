"""The Modbus driver against the simulated heat pump over real TCP (pymodbus server)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from heatgate.agent.config import ModbusDevice, ModbusTcpSource
from heatgate.drivers.modbus.errors import WriteRefused
from heatgate.drivers.modbus.planner import Block
from heatgate.drivers.modbus.source import ModbusBusRunner, make_modbus_source
from heatgate.drivers.reading import PointKind, Quality, Reading
from heatgate.drivers.sim.modbus import FaultPlan, SimServer, serve_heatpump_tcp, serve_tcp
from heatgate.drivers.sim.modbus_model import heatpump_device
from tests.support.leaks import run_async


def _runner(port: int, *, interval_s: float = 10.0, timeout_s: float = 0.3, **kwargs: float) -> ModbusBusRunner:
    config = ModbusTcpSource(
        name="hp-bus",
        host="127.0.0.1",
        port=port,
        timeout_s=timeout_s,
        devices=[ModbusDevice(name="hp1", unit_id=1, profile="sim-heatpump", interval_s=interval_s)],
    )
    return make_modbus_source(config, **kwargs)


def test_every_type_decoded_from_the_simulator() -> None:
    async def main() -> dict[str, Reading]:
        server = await serve_heatpump_tcp("127.0.0.1", 0)
        runner = _runner(server.port)
        try:
            readings = await runner.poll_device(runner.devices["hp1"])
        finally:
            runner.link.close()
            await server.stop()
        return {r.point: r for r in readings}

    got = run_async(main())
    assert got["model_code"].value == 0x4847 and got["model_code"].text == "heatgate HG-SIM-1"  # u16 + map
    assert got["flow_setpoint_c"].value == 35.0  # s16 scaled, holding
    assert -10 < got["outdoor_temp_c"].value < 20  # type: ignore[operator]
    assert got["heat_energy_kwh"].value == pytest.approx(1234.567)  # u64 scaled
    assert got["electric_energy_kwh"].value == pytest.approx(400.25, abs=0.01)  # f64
    assert got["compressor_starts"].value == 70000  # u32 little word order
    assert got["degree_minutes"].value == -120  # s64
    assert got["flow_offset_k"].value == -1.25  # s32 scaled
    assert got["firmware_build"].value == 0x0203  # byte-swapped u16
    assert isinstance(got["cop"].value, float) and got["cop"].value > 1  # f32
    assert got["relay_flags"].value == 0b101  # bits register
    assert got["heating_enabled"].value == 1 and got["heating_enabled"].text == "on"  # coil
    assert got["alarm_active"].value == 0  # discrete input
    serial = got["serial_number"]
    assert serial.value == "HGSIM0000001234" and serial.kind is PointKind.IDENTIFIER  # string
    assert got["solar_temp_c"].quality is Quality.INVALID and got["solar_temp_c"].value is None
    assert {r.device_type for r in got.values()} == {"heat-pump"}
    assert {r.source for r in got.values()} == {"hp-bus"} and {r.device for r in got.values()} == {"hp1"}


def test_fault_code_and_exception_responses_seen_as_quality() -> None:
    async def main() -> tuple[list[Reading], list[Reading], dict[str, object]]:
        server = await serve_heatpump_tcp("127.0.0.1", 0, faults=FaultPlan(fault_code=101, fault_at_s=0.0))
        runner = _runner(server.port)
        try:
            faulty = await runner.poll_device(runner.devices["hp1"])
            server.device(1).faults.exception_rate = 1.0
            failing = await runner.poll_device(runner.devices["hp1"])
            health = runner.health()
        finally:
            runner.link.close()
            await server.stop()
        return faulty, failing, health

    faulty, failing, health = run_async(main())
    fault = next(r for r in faulty if r.point == "fault_code")
    assert fault.value == 101 and fault.text == "high pressure" and fault.kind is PointKind.FAULT
    assert next(r for r in faulty if r.point == "alarm_active").value == 1
    # Every block answered with an exception: every point flagged, none carries a value, and the
    # device is not declared dead (it answered).
    assert failing and all(r.quality is Quality.COMM_ERROR and r.value is None for r in failing)
    device = health["devices"]["hp1"]  # type: ignore[index]
    # The slow-class blocks (max_age_s 3600) were read in the first poll and are not due again.
    assert device["state"] == "ok"
    assert device["errors"]["exception"] == sum(1 for b in runner_blocks() if b.max_age_s is None)
    assert "serial_number" not in {r.point for r in failing}


def runner_blocks() -> list[Block]:
    from heatgate.drivers.modbus.planner import plan_profile
    from heatgate.drivers.modbus.profile import load_profile

    return list(plan_profile(load_profile("sim-heatpump")))


def test_illegal_address_marks_only_that_block(tmp_path: object) -> None:
    from pathlib import Path

    profile = Path(str(tmp_path)) / "reserved.toml"
    # A profile that (wrongly) maps the simulator's reserved input registers 27-29.
    profile.write_text(
        'name = "reserved"\ndevice_type = "heat-pump"\nmax_gap_registers = 0\n'
        '[[points]]\nname = "outdoor_temp_c"\ntable = "input"\naddress = 0\ntype = "s16"\n'
        '[[points]]\nname = "reserved"\ntable = "input"\naddress = 28\n'
    )

    async def main() -> list[Reading]:
        server = await serve_heatpump_tcp("127.0.0.1", 0)
        config = ModbusTcpSource(
            name="hp-bus",
            host="127.0.0.1",
            port=server.port,
            timeout_s=0.5,
            devices=[ModbusDevice(name="hp1", unit_id=1, profile=str(profile))],
        )
        runner = make_modbus_source(config)
        try:
            return await runner.poll_device(runner.devices["hp1"])
        finally:
            runner.link.close()
            await server.stop()

    got = {r.point: r for r in run_async(main())}
    assert got["reserved"].quality is Quality.INVALID
    assert got["outdoor_temp_c"].quality is Quality.OK


def test_write_point_reads_back_and_refuses_out_of_bounds() -> None:
    async def main() -> tuple[float, object, list[str]]:
        server = await serve_heatpump_tcp("127.0.0.1", 0)
        runner = _runner(server.port)
        refused = []
        try:
            value = await runner.write_point("hp1", "flow_setpoint_c", 42.5)
            in_sim = server.device(1).current("flow_setpoint_c")
            for device, point, v in (
                ("hp1", "flow_setpoint_c", 61.0),
                ("hp1", "outdoor_temp_c", 1.0),
                ("hp1", "nope", 1.0),
                ("hp9", "flow_setpoint_c", 30.0),
            ):
                try:
                    await runner.write_point(device, point, v)
                except WriteRefused as exc:
                    refused.append(exc.point)
            assert server.device(1).current("flow_setpoint_c") == 42.5  # refusals never reached it
        finally:
            runner.link.close()
            await server.stop()
        return value, in_sim, refused

    value, in_sim, refused = run_async(main())
    assert value == 42.5 and in_sim == 42.5
    assert refused == ["flow_setpoint_c", "outdoor_temp_c", "nope", "flow_setpoint_c"]


async def _collect_until(runner: ModbusBusRunner, predicate: object, timeout_s: float) -> list[Reading]:
    seen: list[Reading] = []
    done = asyncio.Event()

    async def sink(batch: Sequence[Reading]) -> None:
        seen.extend(batch)
        if predicate(seen):  # type: ignore[operator]
            done.set()

    task = asyncio.create_task(runner.run(sink), name="modbus-runner")
    try:
        await asyncio.wait_for(done.wait(), timeout_s)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    return seen


def test_simulator_restarted_under_the_driver() -> None:
    async def main() -> tuple[list[Reading], dict[str, object]]:
        server: SimServer = await serve_tcp({1: heatpump_device()}, "127.0.0.1", 0)
        port = server.port
        runner = _runner(port, interval_s=0.1, timeout_s=0.3, probe_min_s=0.1, probe_max_s=0.3)
        seen: list[Reading] = []
        phase = {"stopped": False, "restarted": False}

        async def sink(batch: Sequence[Reading]) -> None:
            seen.extend(batch)

        task = asyncio.create_task(runner.run(sink), name="modbus-runner")
        try:

            async def wait_for(pred: object) -> None:
                for _ in range(200):
                    if pred():  # type: ignore[operator]
                        return
                    await asyncio.sleep(0.05)
                raise AssertionError("condition not reached")

            await wait_for(lambda: any(r.quality is Quality.OK for r in seen))
            await server.stop()
            phase["stopped"] = True
            mark = len(seen)
            await wait_for(lambda: runner.devices["hp1"].backing_off)
            errors_while_down = [r for r in seen[mark:]]
            server = await serve_tcp({1: heatpump_device()}, "127.0.0.1", port)
            phase["restarted"] = True
            mark2 = len(seen)
            await wait_for(lambda: any(r.quality is Quality.OK for r in seen[mark2:]))
            health = runner.health()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop()
        assert errors_while_down and all(r.quality is Quality.COMM_ERROR for r in errors_while_down)
        return seen, health

    _seen, health = run_async(main())
    device = health["devices"]["hp1"]  # type: ignore[index]
    assert device["state"] == "ok"
    assert device["errors"]["comm"] + device["errors"]["timeout"] >= 1


def test_drops_are_retried_and_delay_raises_latency() -> None:
    async def main() -> dict[str, object]:
        server = await serve_heatpump_tcp("127.0.0.1", 0, faults=FaultPlan(drop_rate=0.3, delay_ms=20, seed=3))
        server.context.rng.seed(7)
        runner = _runner(server.port, timeout_s=0.5)
        try:
            for _ in range(4):
                await runner.poll_device(runner.devices["hp1"])
            return runner.health()
        finally:
            runner.link.close()
            await server.stop()

    health = run_async(main())
    device = health["devices"]["hp1"]  # type: ignore[index]
    assert device["errors"]["timeout"] >= 1  # some requests were dropped ...
    assert device["requests"] > 4 * 3  # ... and retried
    assert device["latency_ms"] >= 20  # the injected delay is measured
