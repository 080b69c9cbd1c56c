"""heatgate-zwave.service: the Z-Wave JS server on loopback only, hardened, the stick allowed."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

from tests.support.unitfile import unit_directives

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "systemd" / "heatgate-zwave.service"
PACKAGE = ROOT / "packaging" / "zwave-js"


def _unit() -> dict[str, list[str]]:
    return unit_directives(UNIT)


def test_api_listens_on_loopback_only() -> None:
    unit = _unit()
    exec_start = unit["Service.ExecStart"][0].split()
    assert exec_start[exec_start.index("--host") + 1] == "127.0.0.1"
    assert "--disable-dns-sd" in exec_start  # no mDNS announcement on the home network
    assert unit["Service.IPAddressDeny"] == ["any"]
    assert unit["Service.IPAddressAllow"] == ["localhost"]


def test_hardening_and_own_state() -> None:
    unit = _unit()
    for key, value in {
        "Service.DynamicUser": "yes",
        "Service.StateDirectory": "heatgate-zwave",
        "Service.NoNewPrivileges": "yes",
        "Service.ProtectSystem": "strict",
        "Service.DevicePolicy": "closed",
        "Service.CapabilityBoundingSet": "",
    }.items():
        assert unit.get(key) == [value], key
    assert {"char-ttyACM rw", "char-ttyUSB rw"} <= set(unit["Service.DeviceAllow"])
    # The keys come in as a credential from heatgate's key directory, written by provision.
    assert unit["Service.LoadCredential"] == ["zwave-server.json:/var/lib/heatgate/keys/zwave-server.json"]
    assert "%d/zwave-server.json" in unit["Service.ExecStart"][0]


def test_server_versions_are_pinned_exactly_with_a_lockfile() -> None:
    package = json.loads((PACKAGE / "package.json").read_text())
    lock = json.loads((PACKAGE / "package-lock.json").read_text())
    for name in ("zwave-js", "@zwave-js/server"):
        version = package["dependencies"][name]
        assert version[0].isdigit(), f"{name} {version} is a range"
        assert lock["packages"][f"node_modules/{name}"]["version"] == version
    assert "node_modules/@zwave-js/server/dist-esm/bin/server.js" in _unit()["Service.ExecStart"][0]


def test_systemd_analyze_accepts_the_directives(tmp_path: Path) -> None:
    assert shutil.which("systemd-analyze"), "systemd-analyze is not installed"
    unit = tmp_path / "heatgate-zwave.service"
    unit.write_text(UNIT.read_text())
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False, timeout=60
    )
    unknown = [line for line in result.stderr.splitlines() if "Unknown" in line or "unknown" in line]
    assert not unknown, result.stderr
