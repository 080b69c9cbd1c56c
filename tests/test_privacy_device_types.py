"""Deny by default for device types: gas follows the smart-meter rules, and a device type the
register does not list gets the most restrictive treatment (no analytics, the coarsest window)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.privacy.policy import UNLISTED, device_type_rules, parse_policy
from heatgate.config import data_path
from heatgate.drivers.p1.telegram import DEVICE_TYPE, GAS_DEVICE_TYPE
from heatgate.drivers.reading import PointKind
from heatgate.typedload import ConfigError
from tests.support.leaks import run_async
from tests.support.privacy import DAY_S, T0, bodies, make_pipeline, reading, shipped_policy

EXAMPLE = data_path("heatgate.example.toml")

M, C = PointKind.MEASUREMENT, PointKind.COUNTER


def _day_of_readings(device_type: str, point: str, kind: PointKind) -> list[Any]:
    """Readings every 5 minutes over two days (counter rising by 1 each)."""
    return [
        reading(point, kind, 100.0 + i, T0 + 300 * i, device="dev", source="src", device_type=device_type)
        for i in range(int(2 * DAY_S // 300))
    ]


@pytest.mark.parametrize("device_type", [GAS_DEVICE_TYPE, DEVICE_TYPE])
def test_p1_gas_and_electricity_are_daily_and_never_analytics(device_type: str) -> None:
    pipeline = make_pipeline()
    records = pipeline.process(_day_of_readings(device_type, "gas_m3", C))
    records += pipeline.flush(force=True)
    assert records, "nothing at all came out"
    assert not [r for r in records if r.stream == "analytics"]
    assert {b["window_s"] for b in bodies(records, "telemetry")} <= {86400}


def test_gas_is_15_minutes_only_with_the_p1_consent() -> None:
    pipeline = make_pipeline()
    run_async(pipeline.state.consent("p1-15min", "test"))
    records = pipeline.process(_day_of_readings(GAS_DEVICE_TYPE, "gas_m3", C)[:10])
    records += pipeline.flush(force=True)
    assert {b["window_s"] for b in bodies(records, "telemetry")} == {900}
    assert not [r for r in records if r.stream == "analytics"]


def test_an_unlisted_device_type_gets_no_analytics_and_the_coarsest_window_even_with_consent() -> None:
    pipeline = make_pipeline()
    run_async(pipeline.state.consent("p1-15min", "test"))
    records = pipeline.process(_day_of_readings("mystery-box", "power_w", M))
    records += pipeline.flush(force=True)
    telemetry = bodies(records, "telemetry")
    assert telemetry and {b["window_s"] for b in telemetry} <= {86400}
    assert not [r for r in records if r.stream == "analytics"]
    # A fault of an unlisted device still reaches the service stream (the contract).
    out = pipeline.process([reading("fault_code", PointKind.FAULT, 7, T0 + 5, device_type="mystery-box")])
    assert [b["code"] for b in bodies(out, "service")] == [7]
    assert not [r for r in pipeline.flush(force=True) if r.stream == "analytics"]


def test_a_listed_device_type_keeps_its_rules() -> None:
    pipeline = make_pipeline()
    records = pipeline.process(_day_of_readings("heat-pump", "power_w", M)[:20])
    records += pipeline.flush(force=True)
    assert {b["window_s"] for b in bodies(records, "telemetry")} == {300}
    assert [r for r in records if r.stream == "analytics"]


def test_rules_say_which_rule_each_device_type_falls_under() -> None:
    policy = shipped_policy()
    gas = device_type_rules(policy, GAS_DEVICE_TYPE)
    assert gas["telemetry"] == "86400 s (900 s with consent p1-15min) by streams.telemetry.windows[0]"
    assert gas["analytics"] == "excluded by streams.analytics.exclude_device_types"
    assert gas["service"].startswith("1 s by streams.service")
    unknown = device_type_rules(policy, "mystery-box")
    assert unknown["analytics"].startswith(f"excluded: {UNLISTED}")
    assert unknown["telemetry"].startswith(f"86400 s, the coarsest: {UNLISTED}")
    heat_pump = device_type_rules(policy, "heat-pump")
    assert heat_pump["analytics"] == "3600 s by streams.analytics.time_granularity_s"


def test_a_rule_naming_a_device_type_the_register_does_not_list_is_an_error() -> None:
    data = tomllib.loads(data_path("privacy.toml").read_text())
    del data["device_types"]["gas-meter"]
    with pytest.raises(ConfigError) as info:
        parse_policy(data, source="p.toml")
    paths = {issue.path for issue in info.value.issues}
    assert "streams.telemetry.windows[0].device_types[1]" in paths
    assert "streams.analytics.exclude_device_types[1]" in paths


def test_without_a_register_of_device_types_nothing_enters_analytics() -> None:
    data = tomllib.loads(data_path("privacy.toml").read_text())
    data["device_types"] = {}
    data["streams"]["telemetry"]["windows"] = []
    data["streams"]["analytics"]["exclude_device_types"] = []
    policy = parse_policy(data)
    assert not policy.takes_device_type("analytics", "heat-pump")
    assert policy.takes_device_type("service", "heat-pump")
    assert policy.window_s("telemetry", "heat-pump", frozenset()) == 300


def test_check_config_shows_the_rule_of_every_device_type_of_the_sources(tmp_path: Path) -> None:
    config = tmp_path / "heatgate.toml"
    text = data_path("heatgate.example.toml").read_text().replace('"energy-switch"', '"mystery-box"')
    config.write_text(text)
    result = subprocess.run(
        [sys.executable, "-m", "heatgate", "check-config", "--offline", "--config", str(config), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    device_types = json.loads(result.stdout)["device_types"]
    assert device_types["gas-meter"]["listed"] and device_types["gas-meter"]["from"] == ["smartmeter/gas"]
    assert device_types["gas-meter"]["rules"]["analytics"].startswith("excluded by")
    assert not device_types["mystery-box"]["listed"]
    assert device_types["mystery-box"]["from"] == ["zwave/washing-machine"]
    assert device_types["mystery-box"]["rules"]["analytics"].startswith(f"excluded: {UNLISTED}")
    assert "heat-pump" in device_types and "energy-meter" in device_types
    plain = subprocess.run(
        [sys.executable, "-m", "heatgate", "check-config", "--offline", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert plain.returncode == 0 and f"mystery-box ({UNLISTED})" in plain.stdout, plain.stdout


def test_doctor_lists_device_types_with_their_rule() -> None:
    from heatgate.agent.config import load_config
    from heatgate.agent.doctor import check_policy

    checks = check_policy(load_config(data_path("heatgate.example.toml")).config)
    by_name = {check.name: check for check in checks}
    assert by_name["privacy policy"].ok
    gas = by_name["device type gas-meter"]
    assert "smartmeter/gas" in gas.detail and "telemetry: 86400 s" in gas.detail


def test_docs_hold_the_register_the_report_prints() -> None:
    from heatgate.agent.privacy.register_doc import BEGIN_MARK, END_MARK, register_markdown

    docs = (Path(__file__).parent.parent / "docs" / "privacy.md").read_text()
    section = docs[docs.index(BEGIN_MARK) : docs.index(END_MARK) + len(END_MARK)] + "\n"
    assert section == register_markdown(shipped_policy()), "regenerate: heatgate privacy report --markdown"
    result = subprocess.run(
        [sys.executable, "-m", "heatgate", "privacy", "report", "--markdown", "--config", str(EXAMPLE)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == section
    for stream in ("service", "telemetry", "analytics", "security", "connectivity"):
        assert f"#### {stream}" in section
    assert "| gas-meter |" in section and "unlisted" in section and "sum / samples" in section


def test_every_source_type_reports_the_device_types_it_produces() -> None:
    """A source type the report forgot would keep its devices out of check-config's rule table."""
    from heatgate.agent.privacy.device_types import configured_device_types
    from heatgate.drivers.modbus.settings import ModbusDevice, ModbusRtuOverTcpSource
    from heatgate.drivers.zwavejs.settings import ZwaveJsNode, ZwaveJsSource

    bridge = ModbusRtuOverTcpSource(
        name="bridge", host="127.0.0.1", devices=[ModbusDevice(name="em", unit_id=1, profile="sdm630")]
    )
    zwave = ZwaveJsSource(name="zw", nodes=[ZwaveJsNode(node_id=5, name="leak", device_type="water-sensor")])
    found = configured_device_types([bridge, zwave])
    assert found["energy-meter"] == ["bridge/em"]
    assert found["water-sensor"] == ["zw/leak"]
    assert "zw/controller" in found["zwave-controller"]
    assert "zw/(nodes not configured)" in found["zwave-sensor"]
