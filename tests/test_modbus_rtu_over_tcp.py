"""Modbus RTU over TCP (a serial-to-Ethernet converter) against the simulator served that way."""

from __future__ import annotations

from heatgate.agent.config import ModbusDevice, ModbusRtuOverTcpSource, ModbusTcpSource
from heatgate.drivers.modbus.source import make_modbus_source
from heatgate.drivers.reading import Quality, Reading
from heatgate.drivers.sim.modbus import FaultPlan, serve_rtu_over_tcp
from heatgate.drivers.sim.modbus_model import heatpump_device
from tests.support.leaks import run_async


def test_rtu_frames_over_tcp_read_and_write() -> None:
    async def main() -> tuple[list[Reading], float, list[Reading], dict[str, object]]:
        server = await serve_rtu_over_tcp({7: heatpump_device(FaultPlan(fault_code=101))})
        config = ModbusRtuOverTcpSource(
            name="converter",
            host="127.0.0.1",
            port=server.port,
            timeout_s=0.5,
            devices=[ModbusDevice(name="hp", unit_id=7, profile="sim-heatpump")],
        )
        runner = make_modbus_source(config)
        # The same server does not speak Modbus TCP (MBAP): the framing is what is tested.
        wrong = make_modbus_source(
            ModbusTcpSource(
                name="mbap",
                host="127.0.0.1",
                port=server.port,
                timeout_s=0.3,
                devices=[ModbusDevice(name="hp", unit_id=7, profile="sim-heatpump")],
            ),
            retries=0,
        )
        try:
            readings = await runner.poll_device(runner.devices["hp"])
            written = await runner.write_point("hp", "flow_setpoint_c", 41.5)
            refused = await wrong.poll_device(wrong.devices["hp"])
            health = runner.health()
        finally:
            runner.link.close()
            wrong.link.close()
            await server.stop()
        return readings, written, refused, health

    readings, written, refused, health = run_async(main())
    got = {r.point: r for r in readings}
    assert got["fault_code"].value == 101 and got["serial_number"].value == "HGSIM0000001234"
    assert got["heat_energy_kwh"].quality is Quality.OK
    assert written == 41.5
    assert health["type"] == "modbus-rtu-over-tcp" and str(health["link"]).startswith("rtu://127.0.0.1:")
    assert not any(r.quality is Quality.OK for r in refused)
