"""``heatgate privacy ...`` end to end on a real config, master key and buffer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from heatgate.agent.cli import main
from heatgate.buffer.keys import create_master_key
from heatgate.config import data_path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    text = data_path("heatgate.example.toml").read_text()
    text = text.replace('state_dir = "/tmp/heatgate-example"', f'state_dir = "{tmp_path / "state"}"')
    path = tmp_path / "heatgate.toml"
    path.write_text(text)
    return path


def _report(config: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["privacy", "report", "--json", "--config", str(config)]) == 0
    return json.loads(capsys.readouterr().out)


def test_report_from_the_config_alone(config_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = _report(config_file, capsys)
    assert document["region_sent"] == "35"
    assert document["streams"]["analytics"]["state"] is None and "no buffer" in document["note"]
    assert main(["privacy", "report", "--config", str(config_file)]) == 0
    text = capsys.readouterr().out
    assert "heatgate/v1/analytics/{device_type}  (no gateway id)" in text
    assert "heatgate/v1/gw-example-0001/service/{fault,status}" in text and "3511" not in text


def test_rights_through_the_cli(config_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    create_master_key(tmp_path / "state" / "keys" / "master.key")
    c = ["--config", str(config_file)]
    assert main(["privacy", "object", "analytics", *c]) == 0
    assert main(["privacy", "object", "service", *c]) == 2  # not objectable: refused
    assert main(["privacy", "restrict", "telemetry", *c]) == 0
    assert main(["privacy", "consent", "p1-15min", *c]) == 0
    assert main(["privacy", "consent", "marketing", *c]) == 2
    capsys.readouterr()
    document = _report(config_file, capsys)
    assert document["choices"]["objections"] == ["analytics"]
    assert document["choices"]["restrictions"] == ["telemetry"]
    assert document["streams"]["telemetry"]["state"]["effective_windows_s"] == {"smart-meter": 900, "gas-meter": 900}
    assert document["streams"]["analytics"]["state"]["intake"] is False

    out = tmp_path / "export.json"
    assert main(["privacy", "export", "--output", str(out), *c]) == 0
    export = json.loads(out.read_text())
    assert out.stat().st_mode & 0o077 == 0
    events = [(r["body"]["event"], r["body"]["outcome"]) for r in export["records"]]
    assert events == [
        ("privacy.object", "done"),
        ("privacy.object", "refused"),
        ("privacy.restrict", "done"),
        ("privacy.consent", "done"),
        ("privacy.consent", "refused"),
    ]

    assert main(["privacy", "erase", *c]) == 2  # without --yes nothing happens
    assert main(["privacy", "erase", "--yes", *c]) == 0
    assert main(["privacy", "export", "--output", str(out), *c]) == 0
    remaining = [r["body"]["event"] for r in json.loads(out.read_text())["records"]]
    assert remaining == ["privacy.erase"]  # the erase kept only its own audit record
    assert main(["privacy", "object", "analytics", "--withdraw", *c]) == 0
    capsys.readouterr()
    assert _report(config_file, capsys)["choices"]["objections"] == []


def test_bad_config_exits_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[gateway]\nid = 'x'\n")
    assert main(["privacy", "report", "--config", str(bad)]) == 2
