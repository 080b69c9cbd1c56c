"""`heatgate sim heatpump` and `heatgate scan modbus`, run as a new user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from heatgate.agent.devtools.localbroker import free_port


def test_sim_then_scan_finds_the_unit_and_its_profile() -> None:
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "heatgate", "sim", "heatpump", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        assert sim.stdout is not None
        first = sim.stdout.readline().decode()
        assert f"serving Modbus TCP on 127.0.0.1:{port}" in first, first
        found = subprocess.run(
            [
                sys.executable,
                "-m",
                "heatgate",
                "scan",
                "modbus",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--units",
                "1-3",
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert found.returncode == 0, found.stdout + found.stderr
        assert "unit   1: answers; fits profile sim-heatpump" in found.stdout
        assert "unit   2" not in found.stdout  # only units that answer are listed
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        if sim.stdout is not None:
            sim.stdout.close()
    nothing = subprocess.run(
        [
            sys.executable,
            "-m",
            "heatgate",
            "scan",
            "modbus",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--units",
            "1-2",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert nothing.returncode == 1  # no unit answered (the simulator is gone)


def _heatgate(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heatgate", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def test_profile_check_prints_the_plan_or_located_errors(tmp_path: Path) -> None:
    good = _heatgate("profile", "check", "nibe-s")
    assert good.returncode == 0, good.stderr
    assert "profile nibe-s (NIBE" in good.stdout
    assert "hot_water_energy_kwh, heat_energy_kwh" in good.stdout  # 1583-1586 in one request
    assert (
        "12 point(s) in 7 request(s) per full poll cycle (one request per point: 12)" in good.stdout
    )  # input 6 declared unreadable: 1-5 and 7-9
    plan = json.loads(_heatgate("profile", "check", "sdm630", "--json").stdout)
    assert plan["requests_per_cycle"] == len(plan["blocks"]) and plan["points"] == 16
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "bad"\ndevice_type = "heat-pump"\nmax_registers_per_read = 2\n'
        '[[points]]\nname = "serial"\naddress = 0\ntype = "string"\nchars = 10\n'
        '[[points]]\nname = "mode"\naddress = 9\nbit_range = [4, 7]\nflags = { "3" = "defrost" }\n'
    )
    refused = _heatgate("profile", "check", str(bad))
    assert refused.returncode == 2
    assert f"{bad}: points[0].address: 5 registers exceed max_registers_per_read" in refused.stderr
    assert "points[1]" not in refused.stderr  # a 4-bit field with its flags is fine
    worse = tmp_path / "worse.toml"
    worse.write_text('name = "w"\ndevice_type = "x"\n[[points]]\nname = "m"\naddress = 9\nbit_range = [4, 20]\n')
    refused = _heatgate("profile", "check", str(worse))
    assert refused.returncode == 2 and f"{worse}: points[0].bit_range: give [first, last]" in refused.stderr


def test_read_prints_every_value_and_stores_nothing(tmp_path: Path) -> None:
    port = free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "heatgate", "sim", "heatpump", "--port", str(port), "--fault", "101@0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    state = tmp_path / "state"
    config = tmp_path / "heatgate.toml"
    config.write_text(
        f'[gateway]\nid = "gw-read-0001"\nregion = "NL-UT"\nstate_dir = "{state}"\n'
        f'[[sources]]\ntype = "modbus-tcp"\nname = "hp-bus"\nport = {port}\n'
        '[[sources.devices]]\nname = "hp1"\nunit_id = 1\nprofile = "sim-heatpump"\n'
    )
    try:
        assert sim.stdout is not None
        assert "serving Modbus TCP" in sim.stdout.readline().decode()
        table = _heatgate("read", "--config", str(config))
        as_json = _heatgate("read", "--config", str(config), "--device", "hp1", "--json")
        unknown = _heatgate("read", "--config", str(config), "--source", "nope")
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        if sim.stdout is not None:
            sim.stdout.close()
    assert table.returncode == 0, table.stdout + table.stderr
    assert "nothing is stored or published" in table.stdout
    assert "fault_code" in table.stdout and "high pressure" in table.stdout and "input 21 u16" in table.stdout
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    fault = next(r for r in records if r["point"] == "fault_code")
    assert fault == {
        "source": "hp-bus",
        "device": "hp1",
        "point": "fault_code",
        "value": 101,
        "text": "high pressure",
        "unit": None,
        "quality": "ok",
        "register": "input 21 u16",
    }
    assert "nothing is stored or published" in as_json.stderr
    assert not state.exists()  # nothing written: no buffer, no learned facts
    assert unknown.returncode == 2 and "no source 'nope'" in unknown.stderr
