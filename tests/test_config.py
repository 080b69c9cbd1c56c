"""Config loading: the shipped example is valid; every mistake is reported, located, at once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from heatgate.agent.config import ModbusTcpSource, load_config
from heatgate.config import data_path
from heatgate.typedload import ConfigError

DATA = Path(__file__).parent / "data"
EXAMPLE = data_path("heatgate.example.toml")


def heatgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "heatgate", *args], capture_output=True, text=True, timeout=60)


def test_shipped_example_is_valid() -> None:
    loaded = load_config(EXAMPLE)
    config = loaded.config
    assert config.gateway.id == "gw-example-0001"
    assert {s.name for s in config.sources} == {"heatpump", "meter-bus", "smartmeter", "zwave"}
    tcp = next(s for s in config.sources if isinstance(s, ModbusTcpSource))
    assert tcp.devices[0].profile == "sim-heatpump"
    assert config.mqtt.puback_timeout_s == 30.0
    assert len(loaded.sha256) == 64


def test_check_config_example_exits_0() -> None:
    result = heatgate("check-config", "--offline", "--config", str(EXAMPLE))
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
    assert "gw-example-0001" in result.stdout


def test_five_planted_mistakes_all_located() -> None:
    path = DATA / "five-mistakes.toml"
    result = heatgate("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    expected = [
        "gateway.state_dir: must be an absolute path",
        "mqtt.keepalive_s: expected `int`, got `str`",
        "mqtt.url: plain mqtt:// is allowed only to a loopback broker",
        "buffer.cap_byts: unknown key (did you mean 'cap_bytes'?)",
        "sources[1].type: expected one of",
    ]
    for text in expected:
        assert f"{path}: {text}" in result.stderr, (text, result.stderr)
    assert "5 problem(s)" in result.stderr


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "heatgate.toml"
    path.write_text(body)
    return path


BASE = '[gateway]\nid = "gw-t-0001"\nregion = "1234"\nstate_dir = "/tmp/x"\n'


@pytest.mark.parametrize(
    ("body", "location", "message"),
    [
        ("[gateway\nid = 1", "", "not valid TOML"),
        (BASE + "[mqtt]\nkeepalive_s = 2\n", "mqtt.keepalive_s", ">= 5"),
        (BASE + "[mqtt]\npuback_timeout_s = 0\n", "mqtt.puback_timeout_s", "> 0"),
        (BASE + '[mqtt]\npuback_timeout_s = "soon"\n', "mqtt.puback_timeout_s", "expected `float`"),
        (
            BASE + '[[sources]]\ntype = "p1"\nname = "a"\nport = "/dev/ttyUSB0"\n'
            '[[sources]]\ntype = "p1"\nname = "a"\nport = "/dev/ttyUSB1"\n',
            "sources[1].name",
            "duplicate source name 'a'",
        ),
        (
            BASE + '[[sources]]\ntype = "p1"\nname = "a"\nport = "ttyUSB0"\n',
            "sources[0].port",
            "must be an absolute path",
        ),
        (BASE + '[[sources]]\nname = "a"\n', "sources[0].type", "missing required key"),
        (BASE + '[[sources]]\nname = "a"\ntype = ["p1"]\n', "sources[0].type", "expected one of"),
        ('[gateway]\nregion = "1234"\n', "gateway.id", "missing required key"),
        (
            BASE + '[[sources]]\ntype = "modbus-tcp"\nname = "hp"\n'
            '[[sources.devices]]\nname = "d"\nunit_id = 300\nprofile = "sim-heatpump"\n',
            "sources[0].devices[0].unit_id",
            "<= 247",
        ),
        (
            BASE + '[[sources]]\ntype = "modbus-tcp"\nname = "hp"\n'
            '[[sources.devices]]\nname = "d"\nunit_id = 3\nprofile = "no-such-profile"\n',
            "sources[0].devices[0].profile",
            "unknown profile 'no-such-profile'",
        ),
        (BASE + '[mqtt]\nurl = "mqtts://b:8883"\ncert_file = "/a.crt"\n', "mqtt.cert_file", "give both"),
        ("extra = 1\n" + BASE, "extra", "unknown key"),
        ('[gateway]\nid = "gw.example.0001"\nregion = "1234"\n', "gateway.id", "expected a gateway id of 3 to 64"),
        (BASE + "regoin = 1\n", "gateway.regoin", "did you mean 'region'"),
    ],
)
def test_bad_config_is_located(tmp_path: Path, body: str, location: str, message: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    issues = caught.value.issues
    assert any(i.path == location and message in i.message for i in issues), issues
    assert caught.value.source == str(path)


def test_missing_file_exit_2_no_traceback(tmp_path: Path) -> None:
    result = heatgate("check-config", "--config", str(tmp_path / "absent.toml"))
    assert result.returncode == 2
    assert "file not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_usage_exit_2() -> None:
    result = heatgate("check-config", "--no-such-flag")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr


def test_version_and_help() -> None:
    version = heatgate("--version")
    assert version.returncode == 0 and version.stdout.startswith("heatgate ")
    help_text = heatgate("--help").stdout
    assert "exit status" in help_text and "check-config" in help_text
