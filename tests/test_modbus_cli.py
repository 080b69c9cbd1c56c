"""`heatgate sim heatpump` and `heatgate scan modbus`, run as a new user runs them."""

from __future__ import annotations

import subprocess
import sys

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
