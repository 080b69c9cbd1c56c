"""The systemd unit is hardened as promised and verifies; sd_notify and the loop watchdog work."""

from __future__ import annotations

import asyncio
import configparser
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from heatgate.agent.sdnotify import LoopWatchdog, Notifier, watchdog_interval_s
from tests.support.unitfile import unit_directives

UNIT = Path(__file__).resolve().parents[1] / "systemd" / "heatgate.service"


def _unit() -> dict[str, list[str]]:
    return unit_directives(UNIT)


def test_unit_hardening_directives() -> None:
    unit = _unit()
    expected = {
        "Service.Type": "notify",
        "Service.User": "heatgate",
        "Service.SupplementaryGroups": "dialout",
        "Service.StateDirectory": "heatgate",
        "Service.ConfigurationDirectory": "heatgate",
        "Service.Restart": "on-failure",
        "Service.NoNewPrivileges": "yes",
        "Service.ProtectSystem": "strict",
        "Service.ProtectHome": "yes",
        "Service.PrivateTmp": "yes",
        "Service.RestrictAddressFamilies": "AF_UNIX AF_INET AF_INET6",
        "Service.DevicePolicy": "closed",
        "Service.CapabilityBoundingSet": "",
    }
    for key, value in expected.items():
        assert value in unit.get(key, []), (key, unit.get(key))
    assert "@system-service" in unit["Service.SystemCallFilter"]
    assert int(unit["Service.WatchdogSec"][0]) > 0
    assert unit["Service.MemoryMax"][0].endswith("M")
    assert any(v.startswith("char-ttyUSB") for v in unit["Service.DeviceAllow"])
    assert unit["Service.ExecStart"][0].split()[1:3] == ["run", "--config"]
    # The sealed master key comes from provision's drop-in (tests/test_deb_package.py): a unit that
    # names a credential nobody created would not start.
    assert "Service.LoadCredentialEncrypted" not in unit


def test_unit_parses_as_ini() -> None:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNIT.read_text())
    assert set(parser.sections()) == {"Unit", "Service", "Install"}


def test_systemd_analyze_verify(tmp_path: Path) -> None:
    heatgate = Path(sys.executable).with_name("heatgate")
    text = UNIT.read_text().replace("/opt/heatgate/bin/heatgate", str(heatgate))
    unit = tmp_path / "heatgate.service"
    unit.write_text(text)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    problems = [line for line in result.stderr.splitlines() if "heatgate.service" in line]
    assert result.returncode == 0 and not problems, result.stderr


def _listen(tmp_path: Path) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(2)
    return sock


def test_notifier_sends_datagrams(tmp_path: Path) -> None:
    with _listen(tmp_path) as sock:
        notifier = Notifier(str(tmp_path / "notify"))
        notifier.ready("3 sources, broker connected")
        notifier.watchdog()
        notifier.stopping()
        notifier.close()
        got = [sock.recv(4096).decode() for _ in range(3)]
    assert got[0] == "READY=1\nSTATUS=3 sources, broker connected"
    assert got[1] == "WATCHDOG=1"
    assert got[2] == "STOPPING=1\nSTATUS=stopping"


def test_notifier_outside_systemd_is_silent(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    notifier.ready("x")  # must not raise


def test_watchdog_interval(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    assert watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_PID", "1")
    assert watchdog_interval_s() is None


def test_watchdog_pings_and_detects_a_stalled_loop(tmp_path: Path) -> None:
    stalled = threading.Event()
    with _listen(tmp_path) as sock:
        notifier = Notifier(str(tmp_path / "notify"))
        watchdog = LoopWatchdog(notifier, stall_s=0.3, on_stall=stalled.set)

        async def main() -> None:
            task = asyncio.create_task(watchdog.run())
            await asyncio.sleep(0.25)
            time.sleep(0.8)  # the loop is stuck: no ticks for longer than stall_s
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

        asyncio.run(main())
        notifier.close()
        assert sock.recv(100) == b"WATCHDOG=1"
    assert stalled.is_set()


def test_watchdog_quiet_when_loop_is_healthy(tmp_path: Path) -> None:
    stalled = threading.Event()
    watchdog = LoopWatchdog(Notifier(""), stall_s=0.3, on_stall=stalled.set)

    async def main() -> None:
        task = asyncio.create_task(watchdog.run())
        await asyncio.sleep(1.0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    asyncio.run(main())
    assert not stalled.is_set()


def test_reload_is_sighup_under_type_notify() -> None:
    """systemd 252 (Raspberry Pi OS bookworm) has no Type=notify-reload: reload is ExecReload's
    SIGHUP, which the agent handles (tests/test_daemon_reload.py) with RELOADING=1 ... READY=1."""
    unit = _unit()
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.ExecReload"] == ["/bin/kill -HUP $MAINPID"]


def test_notifier_brackets_a_reload(tmp_path: Path) -> None:
    with _listen(tmp_path) as sock:
        notifier = Notifier(str(tmp_path / "notify"))
        before_us = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        notifier.reloading()
        notifier.ready("ok: 2 source(s)")
        notifier.close()
        reloading = dict(line.split("=", 1) for line in sock.recv(4096).decode().splitlines())
        ready = sock.recv(4096).decode()
    assert reloading["RELOADING"] == "1" and reloading["STATUS"] == "reloading"
    assert int(reloading["MONOTONIC_USEC"]) >= before_us
    assert ready == "READY=1\nSTATUS=ok: 2 source(s)"


def _security_offline_supported() -> bool:
    probe = subprocess.run(["systemd-analyze", "security", "--help"], capture_output=True, text=True, timeout=30)
    return "--offline" in probe.stdout


def test_systemd_analyze_security_exposure_at_most_2() -> None:
    assert _security_offline_supported(), "systemd-analyze security --offline needs systemd >= 250"
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    match = re.search(r"Overall exposure level for heatgate\.service: (\d+\.\d+)", result.stdout)
    assert match, result.stdout[-500:]
    assert float(match.group(1)) <= 2.0, result.stdout
    # What the agent needs stays: the serial ports through dialout, the state directory.
    unit = _unit()
    assert unit["Service.PrivateUsers"] == ["no"] and "dialout" in unit["Service.SupplementaryGroups"]
