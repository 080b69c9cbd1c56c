"""Block reads that heal, against a register-image simulator with a real device's limits.

The device maps here are built by hand from raw registers, independently of the profiles that
poll them; the simulator answers exceptions (2 for refused addresses, 3 for reads that are too
long or odd) or stays silent exactly as its map says.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatgate.agent.config import ModbusDevice, ModbusTcpSource
from heatgate.agent.health import HealthSnapshot, SourceView, problems
from heatgate.drivers.modbus.planner import plan_profile
from heatgate.drivers.modbus.profile import load_profile
from heatgate.drivers.modbus.source import ModbusBusRunner, make_modbus_source
from heatgate.drivers.reading import DeviceWrite, PointKind, Quality, Reading, ReportsWrites
from heatgate.drivers.sim.modbus import serve_tcp
from heatgate.drivers.sim.modbus_model import RegisterImageDevice
from tests.support.leaks import run_async

GAP_PROFILE = """\
name = "gappy"
device_type = "heat-pump"
[[points]]
name = "flow_temp_c"
table = "input"
address = 10
type = "s16"
scale = 0.1
[[points]]
name = "fault_code"
table = "input"
address = 14
kind = "fault"
values = { "0" = "no fault", "101" = "high pressure" }
[[points]]
name = "operating_state"
table = "input"
address = 16
kind = "status"
[[points]]
name = "return_temp_c"
table = "input"
address = 20
type = "s16"
scale = 0.1
"""


def _image() -> dict[str, dict[int, int]]:
    # flow 35.5 °C, fault 101, state 1, return 30.0 °C; input 12 is not in the device's map.
    return {"input": {10: 355, 11: 0, 13: 0, 14: 101, 15: 0, 16: 1, 17: 0, 18: 0, 19: 0, 20: 300}}


def _runner(port: int, profile: Path, state_dir: Path | None) -> ModbusBusRunner:
    config = ModbusTcpSource(
        name="bus",
        host="127.0.0.1",
        port=port,
        timeout_s=0.3,
        devices=[ModbusDevice(name="hp", unit_id=1, profile=str(profile))],
    )
    return make_modbus_source(config, state_dir=state_dir)


async def _polls(
    device: RegisterImageDevice, profile: Path, state_dir: Path | None, polls: int = 1
) -> tuple[list[list[Reading]], dict[str, object], list[tuple[str, int, int]]]:
    server = await serve_tcp({1: device}, port=0)
    runner = _runner(server.port, profile, state_dir)
    got = []
    try:
        for _ in range(polls):
            got.append(await runner.poll_device(runner.devices["hp"]))
        health = runner.health()
    finally:
        runner.link.close()
        await server.stop()
    return got, health, list(device.reads)


def test_undeclared_gap_still_reads_the_fault_code_and_reports_the_gap(tmp_path: Path) -> None:
    profile = tmp_path / "gappy.toml"
    profile.write_text(GAP_PROFILE)
    # The planner merges all four points into one read of input 10-20 (gaps are cheap) ...
    assert [(b.start, b.count) for b in plan_profile(load_profile(str(profile)))] == [(10, 11)]
    device = RegisterImageDevice(tables=_image(), unreadable=[("input", 12, 12)])
    (first, second), health, reads = run_async(_polls(device, profile, tmp_path / "state", polls=2))
    # ... which the device refuses; every point is still read, the fault code included.
    got = {r.point: r for r in first}
    assert got["fault_code"].value == 101 and got["fault_code"].text == "high pressure"
    assert got["fault_code"].kind is PointKind.FAULT and got["fault_code"].quality is Quality.OK
    assert got["flow_temp_c"].value == 35.5 and got["return_temp_c"].value == 30.0
    assert got["operating_state"].value == 1
    # The unreadable register is found and reported; no point is lost, so no problem.
    devices = health["devices"]
    assert isinstance(devices, dict)
    assert devices["hp"]["unreadable_registers"] == ["input 12"]
    assert devices["hp"]["unreadable"] == []
    # Re-planned around it: the second poll makes two reads and none is refused.
    assert {r.point: r.value for r in second} == {r.point: r.value for r in first}
    assert reads[-2:] == [("input", 10, 1), ("input", 14, 7)]
    saved = json.loads((tmp_path / "state" / "modbus" / "bus.hp.json").read_text())
    assert saved["unreadable"] == [{"table": "input", "start": 12, "end": 12}]


def test_learned_gap_persists_across_a_restart(tmp_path: Path) -> None:
    profile = tmp_path / "gappy.toml"
    profile.write_text(GAP_PROFILE)
    state = tmp_path / "state"
    run_async(_polls(RegisterImageDevice(tables=_image(), unreadable=[("input", 12, 12)]), profile, state))
    again = RegisterImageDevice(tables=_image(), unreadable=[("input", 12, 12)])
    (readings,), health, reads = run_async(_polls(again, profile, state))
    assert reads == [("input", 10, 1), ("input", 14, 7)]  # no refused block paid again
    devices = health["devices"]
    assert isinstance(devices, dict)
    assert devices["hp"]["heal_requests"] == 0 and devices["hp"]["unreadable_registers"] == ["input 12"]
    assert {r.point: r.quality for r in readings} == dict.fromkeys(
        ["flow_temp_c", "fault_code", "operating_state", "return_temp_c"], Quality.OK
    )
    # A different unit id (another device) starts from nothing.
    facts = json.loads((state / "modbus" / "bus.hp.json").read_text())
    assert facts["unit_id"] == 1 and facts["profile"] == "gappy"


def test_unreadable_fault_point_is_an_alarm(tmp_path: Path) -> None:
    profile = tmp_path / "gappy.toml"
    profile.write_text(GAP_PROFILE)
    device = RegisterImageDevice(tables=_image(), unreadable=[("input", 14, 14)])
    (first, second), health, _ = run_async(_polls(device, profile, None, polls=2))
    for poll in (first, second):
        got = {r.point: r for r in poll}
        assert got["fault_code"].quality is Quality.INVALID and got["fault_code"].value is None
        assert got["flow_temp_c"].value == 35.5 and got["operating_state"].value == 1
    devices = health["devices"]
    assert isinstance(devices, dict)
    assert devices["hp"]["unreadable"] == [{"point": "fault_code", "kind": "fault", "registers": "input 14"}]
    found = problems(HealthSnapshot(now_s=0.0, sources=(SourceView("bus", "running", health),)))
    assert any(p.startswith("alarm: device bus/hp cannot read its fault point fault_code") for p in found), found


def test_silent_register_inside_a_block_heals_like_a_refused_one(tmp_path: Path) -> None:
    profile = tmp_path / "gappy.toml"
    profile.write_text(GAP_PROFILE)
    device = RegisterImageDevice(tables=_image(), silent=[("input", 18, 18)])
    (first, second), health, _ = run_async(_polls(device, profile, tmp_path / "state", polls=2))
    assert {r.point: r.value for r in first} == {
        "flow_temp_c": 35.5,
        "fault_code": 101,
        "operating_state": 1,
        "return_temp_c": 30.0,
    }
    assert {r.point: r.value for r in second} == {r.point: r.value for r in first}
    devices = health["devices"]
    assert isinstance(devices, dict)
    assert devices["hp"]["unreadable_registers"] == ["input 18 (no answer)"]
    # Silence is not persisted: it may have been a flaky line.
    assert not (tmp_path / "state" / "modbus" / "bus.hp.json").exists()


def _meter_profile(tmp_path: Path, *, limits: bool) -> Path:
    lines = ['name = "wide"', 'device_type = "energy-meter"']
    if limits:
        lines += ["max_registers_per_read = 80", "even_register_count = true"]
    for i in range(60):  # f32 values every 2 registers from 0 to 118, then one u16 at 121
        lines += ["[[points]]", f'name = "v{i}"', 'table = "input"', f"address = {2 * i}", 'type = "f32"']
    lines += ["[[points]]", 'name = "code"', 'table = "input"', "address = 121"]
    path = tmp_path / "wide.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def _meter_image() -> dict[str, dict[int, int]]:
    words = {a: 0 for a in range(0, 130)}
    words[0], words[1] = 0x4366, 0x8000  # 230.5 as f32
    words[121] = 7
    return {"input": words}


@pytest.mark.parametrize("limits", [True, False])
def test_read_limits_honoured_or_learned(tmp_path: Path, limits: bool) -> None:
    profile = _meter_profile(tmp_path, limits=limits)
    # With the limits declared the device enforces both rules; without, only its 80-register
    # limit (an undeclared even-count rule would make a lone u16 unreadable, as on the device).
    device = RegisterImageDevice(tables=_meter_image(), max_registers_per_read=80, even_register_count=limits)
    (first, second), health, reads = run_async(_polls(device, profile, tmp_path / "state", polls=2))
    for poll in (first, second):
        got = {r.point: r for r in poll}
        assert got["v0"].value == 230.5 and got["code"].value == 7
        assert all(r.quality is Quality.OK for r in poll)
    devices = health["devices"]
    assert isinstance(devices, dict)
    second_reads = reads[-2:]
    assert all(count <= 80 for _, _, count in second_reads), second_reads
    if limits:  # the profile says it: nothing is ever refused
        assert all(count <= 80 and count % 2 == 0 for _, _, count in reads), reads
        assert devices["hp"]["heal_requests"] == 0
    else:  # one refused 122-register block teaches a limit, and the next poll keeps it
        assert reads[0] == ("input", 0, 122)
        assert devices["hp"]["learned_max_registers"] == 61


def test_nibe_writes_32_bit_values_high_word_first(tmp_path: Path) -> None:
    """nibe-s degree_minutes (holding 11, s32, x0.1) reads low word first, is written high word
    first: the simulated unit stores a write word-reversed, so only the right order reads back."""
    raw = -12345 & 0xFFFFFFFF  # -1234.5 DM
    device = RegisterImageDevice(
        tables={"holding": {11: 0, 12: 0}},
        write_words_reversed=True,
        writable={("holding", 11)},
    )

    async def main() -> tuple[float, dict[int, int]]:
        server = await serve_tcp({1: device}, port=0)
        config = ModbusTcpSource(
            name="bus",
            host="127.0.0.1",
            port=server.port,
            timeout_s=0.5,
            devices=[ModbusDevice(name="nibe", unit_id=1, profile="nibe-s")],
        )
        runner = make_modbus_source(config)
        try:
            back = await runner.write_point("nibe", "degree_minutes", -1234.5)
        finally:
            runner.link.close()
            await server.stop()
        return back, device.tables["holding"]

    back, holding = run_async(main())
    assert back == -1234.5
    assert (holding[11], holding[12]) == (raw & 0xFFFF, raw >> 16)  # stored as the unit reads it: low word first
    point = load_profile("nibe-s").point("degree_minutes")
    assert point.word_order == "little" and point.write_order == "big"


INIT_PROFILE = """\
name = "locked"
device_type = "heat-pump"
[[init]]
address = 40
values = [0x5AA5]
note = "unlock"
[[init]]
address = 41
values = [1, 2]
[[points]]
name = "flow_temp_c"
table = "input"
address = 10
type = "s16"
scale = 0.1
"""


def test_init_writes_are_handed_over_once_each_for_the_audit(tmp_path: Path) -> None:
    """A profile's [[init]] writes are made by the driver on its own: each one, sent or refused,
    is handed to the agent (which audits it), once."""
    profile = tmp_path / "locked.toml"
    profile.write_text(INIT_PROFILE)
    device = RegisterImageDevice(tables=_image(), writable={("holding", 40)})

    async def scenario() -> tuple[list[DeviceWrite], list[DeviceWrite]]:
        server = await serve_tcp({1: device}, port=0)
        runner = _runner(server.port, profile, None)
        assert isinstance(runner, ReportsWrites)  # what the agent looks for to audit them
        try:
            await runner.poll_device(runner.devices["hp"])
            first = runner.take_writes()
            await runner.poll_device(runner.devices["hp"])  # written once per run, not per poll
            second = runner.take_writes()
        finally:
            runner.link.close()
            await server.stop()
        return first, second

    first, second = run_async(scenario())
    assert [(w.device, w.table, w.address, w.count, w.error is None) for w in first] == [
        ("hp", "holding", 40, 1, True),
        ("hp", "holding", 41, 2, False),
    ]
    assert second == []
