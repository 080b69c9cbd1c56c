"""The installer's checks on broken installations: check-config reports every problem of a file in
one run, located (with what it names on this machine, or --offline without); doctor fails a check
with a fix instead of printing a traceback; scan says what it tried."""

from __future__ import annotations

import os
import re
import shutil
import sqlite3
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from heatgate.agent.devtools.localbroker import Broker, free_port
from heatgate.buffer.errors import StoreError
from heatgate.buffer.keys import create_master_key, load_master_key
from heatgate.buffer.sqlite_open import open_database

GATEWAY = "gw-check-0001"


def heatgate(*args: str, user: str | None = None, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "heatgate", *args]
    if user is not None:
        command = ["setpriv", f"--reuid={user}", "--regid=nogroup", "--clear-groups", *command]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL, env={**os.environ}
    )


MANY = """\
[gateway]
id = "gw/one"
region = "3511"
state_dir = "{tmp}/absent-state"

[mqtt]
url = "mqtts://broker.example:8883"
ca_file = "{tmp}/absent/ca.pem"
cert_file = "{tmp}/absent/device.crt"
key_file = "{tmp}/absent/device.key"
username = "gw"
password_file = "{tmp}/absent/password"
protocol = "4"

[buffer]
cipher = "des"

[privacy]
policy_file = "{tmp}/absent/privacy.toml"

[[sources]]
type = "modbus-tcp"
name = "heatpump"
  [[sources.devices]]
  name = "hp1"
  unit_id = 1
  profile = "no-such-profile"
  [[sources.devices]]
  name = "hp1"
  unit_id = 1
  profile = "{tmp}/absent/my-heatpump.toml"

[[sources]]
type = "modbus-rtu"
name = "meter-bus"
port = "{tmp}/absent/ttyUSB0"
baudrate = 1234
  [[sources.devices]]
  name = "meter1"
  unit_id = 1
  profile = "sdm630"

[[sources]]
type = "zwave"
name = "zwave"
port = "{tmp}/absent/ttyACM0"
nodes = [{{ node_id = 2, name = "hall" }}, {{ node_id = 3, name = "hall" }}]

[[sources]]
type = "zwave-js"
name = "zwave-js"
nodes = [{{ node_id = 2, name = "attic" }}, {{ node_id = 2, name = "attic" }}]

[[sources]]
type = "lora"
name = "radio"

[[sources]]
type = "p1"
name = "heatpump"
port = "{tmp}/absent/ttyUSB1"
"""

FILE_PROBLEMS = [
    "gateway.id: expected a gateway id of 3 to 64 characters",
    "mqtt.protocol: expected one of '5', '3.1.1', got '4'",
    "buffer.cipher: expected one of 'chacha20-poly1305', 'aes-256-gcm', got 'des'",
    "sources[0].devices[0].profile: unknown profile 'no-such-profile'",
    "sources[0].devices[1].unit_id: duplicate unit id 1 on this bus",
    "sources[0].devices[1].name: duplicate device name 'hp1'",
    "sources[1].baudrate: expected one of 1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200, got 1234",
    "sources[2].nodes[1].name: duplicate node name 'hall' (also sources[2].nodes[0])",
    "sources[3].nodes[1].node_id: duplicate node id 2",
    "sources[3].nodes[1].name: duplicate node name 'attic' (also sources[3].nodes[0])",
    "sources[4].type: expected one of 'modbus-rtu', 'modbus-rtu-over-tcp', 'modbus-tcp', 'p1', 'zwave', 'zwave-js'",
    "sources[5].name: duplicate source name 'heatpump' (also sources[0])",
]
MACHINE_PROBLEMS = [
    "gateway.state_dir: {tmp}/absent-state: no such directory",
    "mqtt.ca_file: {tmp}/absent/ca.pem: no such file",
    "mqtt.cert_file: {tmp}/absent/device.crt: no such file",
    "mqtt.key_file: {tmp}/absent/device.key: no such file",
    "mqtt.password_file: {tmp}/absent/password: no such file",
    "privacy.policy_file: {tmp}/absent/privacy.toml: no such file",
    "sources[0].devices[1].profile: {tmp}/absent/my-heatpump.toml: no such file",
    "sources[1].port: {tmp}/absent/ttyUSB0: no such device",
    "sources[2].port: {tmp}/absent/ttyACM0: no such device",
    "sources[5].port: {tmp}/absent/ttyUSB1: no such device",
]


def _lines(result: subprocess.CompletedProcess[str], path: Path) -> list[str]:
    prefix = f"  {path}: "
    return [line.removeprefix(prefix) for line in result.stderr.splitlines() if line.startswith(prefix)]


def test_check_config_reports_every_problem_of_a_file_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "heatgate.toml"
    path.write_text(MANY.format(tmp=tmp_path))
    result = heatgate("check-config", "--config", str(path))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = _lines(result, path)
    expected = FILE_PROBLEMS + [p.format(tmp=tmp_path) for p in MACHINE_PROBLEMS]
    for text in expected:
        assert any(line.startswith(text) for line in lines), (text, result.stderr)
    assert f"{len(lines)} problem(s)" in result.stderr and len(lines) == len(expected), result.stderr
    # In the order of the file: tables first, then the sources by index.
    order = [line.split(":", 1)[0].split(".", 1)[0].split("[")[0] for line in lines]
    assert order == sorted(order, key=["gateway", "mqtt", "buffer", "privacy", "sources"].index), order
    indexes = [int(m.group(1)) for line in lines if (m := re.match(r"sources\[(\d+)\]", line))]
    assert indexes == sorted(indexes)
    # The allowed values are listed; no regular expression is shown.
    assert not re.search(r"regex|\^\[|\]\{\d|\$'", result.stderr), result.stderr


def test_offline_checks_the_file_and_not_the_machine(tmp_path: Path) -> None:
    path = tmp_path / "heatgate.toml"
    path.write_text(MANY.format(tmp=tmp_path))
    offline = heatgate("check-config", "--offline", "--config", str(path))
    assert offline.returncode == 2
    lines = _lines(offline, path)
    assert len(lines) == len(FILE_PROBLEMS), offline.stderr
    assert not [line for line in lines if str(tmp_path) in line], "machine checks ran offline"

    # A valid file naming what is not on this machine: fine offline, located problems here.
    good = tmp_path / "good.toml"
    good.write_text(
        f'[gateway]\nid = "{GATEWAY}"\nregion = "3511"\nstate_dir = "{tmp_path}/state"\n'
        f'[mqtt]\nurl = "mqtts://broker.example:8883"\nca_file = "/etc/heatgate/not-here/ca.pem"\n'
        '[[sources]]\ntype = "p1"\nname = "meter"\nport = "/dev/serial/by-id/not-here"\n'
        '[[sources]]\ntype = "modbus-tcp"\nname = "hp"\n'
        '[[sources.devices]]\nname = "hp1"\nunit_id = 1\nprofile = "/etc/heatgate/not-here/hp.toml"\n'
    )
    shipped = heatgate("check-config", "--offline", "--config", str(good))
    assert shipped.returncode == 0, shipped.stderr
    assert "offline" in shipped.stdout and "is valid" in shipped.stdout
    here = heatgate("check-config", "--config", str(good))
    assert here.returncode == 2
    assert _lines(here, good) == [
        f"gateway.state_dir: {tmp_path}/state: no such directory (`heatgate provision --state-dir …` creates it)",
        "mqtt.ca_file: /etc/heatgate/not-here/ca.pem: no such file",
        "sources[0].port: /dev/serial/by-id/not-here: no such device (is the adapter plugged in? "
        "`ls -l /dev/serial/by-id/` lists the connected ones)",
        "sources[1].devices[0].profile: /etc/heatgate/not-here/hp.toml: no such file",
    ], here.stderr


def test_machine_checks_see_the_kind_of_file(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    not_a_dir = tmp_path / "state-file"
    not_a_dir.write_text("")
    path = tmp_path / "heatgate.toml"
    path.write_text(
        f'[gateway]\nid = "{GATEWAY}"\nregion = "3511"\nstate_dir = "{not_a_dir}"\n'
        f'[mqtt]\nurl = "mqtts://b.example:8883"\nca_file = "{tmp_path / "state"}"\n'
        f'[[sources]]\ntype = "zwave"\nname = "zw"\nport = "{not_a_dir}"\n'
    )
    result = heatgate("check-config", "--config", str(path))
    assert result.returncode == 2
    assert _lines(result, path) == [
        f"gateway.state_dir: {not_a_dir}: not a directory",
        f"mqtt.ca_file: {tmp_path / 'state'}: is a directory, expected a file",
        f"sources[0].port: {not_a_dir}: not a serial device (expected a character device such as /dev/ttyUSB0)",
    ], result.stderr


# doctor on broken installations ------------------------------------------------------------------


def _installation(tmp_path: Path, mqtt: str) -> Path:
    state = tmp_path / "state"
    (state / "keys").mkdir(parents=True, mode=0o700)
    state.chmod(0o700)
    create_master_key(state / "keys" / "master.key")
    path = tmp_path / "heatgate.toml"
    path.write_text(
        f'[gateway]\nid = "{GATEWAY}"\nregion = "3511"\nstate_dir = "{state}"\n[mqtt]\n{mqtt}\n'
        f'[keys]\nmaster_key_file = "{state}/keys/master.key"\n'
    )
    return path


def _break_nothing(tmp_path: Path) -> str:
    return f'url = "mqtt://127.0.0.1:{free_port()}"'


def _missing_ca(tmp_path: Path) -> str:
    return f'url = "mqtts://127.0.0.1:{free_port()}"\nca_file = "{tmp_path}/ca.pem"'


def _garbage_certificate(tmp_path: Path) -> str:
    (tmp_path / "device.crt").write_text("not a certificate\n")
    (tmp_path / "device.key").write_text("not a key\n")
    (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    return (
        f'url = "mqtts://127.0.0.1:{free_port()}"\nca_file = "{tmp_path}/ca.pem"\n'
        f'cert_file = "{tmp_path}/device.crt"\nkey_file = "{tmp_path}/device.key"'
    )


def _missing_password(tmp_path: Path) -> str:
    return f'url = "mqtt://127.0.0.1:{free_port()}"\nusername = "gw"\npassword_file = "{tmp_path}/password"'


BROKEN = {
    "unreachable broker": (_break_nothing, ["✘ broker: 127.0.0.1:"]),
    "missing CA file": (_missing_ca, ["✘ broker CA: CA file", "not found"]),
    "garbage certificate files": (_garbage_certificate, ["✘ broker CA:", "✘ device certificate:", "not a PEM"]),
    "missing password file": (_missing_password, ["✘ broker:", "password file", "No such file"]),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_doctor_fails_a_check_with_its_fix_and_never_a_traceback(tmp_path: Path, case: str) -> None:
    make, expected = BROKEN[case]
    config = _installation(tmp_path, make(tmp_path))
    result = heatgate("doctor", "--config", str(config), "--probe-timeout-s", "1")
    _assert_failed_with_fixes(result, expected)


def _assert_failed_with_fixes(result: subprocess.CompletedProcess[str], expected: list[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    for text in expected:
        assert text in result.stdout, (text, result.stdout)
    lines = result.stdout.splitlines()
    for index, line in enumerate(lines):
        if line.startswith("✘"):
            fix = lines[index + 1].strip() if index + 1 < len(lines) else ""
            assert fix.startswith("fix: "), (line, fix)
            assert "FILE" not in fix and "check the" not in fix.removeprefix("fix: ")[:10], fix


def test_doctor_on_wrong_modes_and_a_corrupt_buffer(tmp_path: Path) -> None:
    config = _installation(tmp_path, f'url = "mqtt://127.0.0.1:{free_port()}"')
    state = tmp_path / "state"
    state.chmod(0o755)
    (state / "keys" / "master.key").chmod(0o644)
    (state / "buffer.db").write_text("this is not a database, it is a text file of some length\n" * 20)
    result = heatgate("doctor", "--config", str(config), "--probe-timeout-s", "1")
    _assert_failed_with_fixes(
        result, [f"chmod 700 {state}", f"chmod 600 {state}/keys/master.key", "✘ buffer:", "moves it aside"]
    )


def test_doctor_as_another_user_says_run_it_as_the_service_user() -> None:
    assert os.geteuid() == 0 and shutil.which("setpriv"), "runs doctor as nobody: needs root and setpriv (util-linux)"
    # Under /tmp itself: pytest's own temporary folders are closed to other users.
    place = Path(tempfile.mkdtemp(prefix="heatgate-doctor-"))
    try:
        place.chmod(0o755)
        _doctor_as_nobody(place)
    finally:
        shutil.rmtree(place)


def _doctor_as_nobody(tmp_path: Path) -> None:
    config = _installation(tmp_path, f'url = "mqtt://127.0.0.1:{free_port()}"')
    (config.parent / "state" / "buffer.db").write_bytes(b"")
    config.chmod(0o644)
    result = heatgate("doctor", "--config", str(config), "--probe-timeout-s", "1", user="nobody")
    _assert_failed_with_fixes(result, ["✘ state directory:", "✘ master key:", "permission denied"])
    assert f"sudo -u heatgate heatgate doctor --config {config}" in result.stdout


# the buffer check judges as the agent does at start ----------------------------------------------


def _fresh(path: Path, key: bytes) -> None:
    opened = open_database(path, key, local_command=False)
    opened.conn.close()
    opened.turnstile.close()


def _not_a_database(path: Path, key: bytes) -> None:
    path.write_bytes(b"garbage, not SQLite " * 400)


def _records_without_key_check(path: Path, key: bytes) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE records (id TEXT)")
        conn.execute("INSERT INTO records VALUES ('r1')")
    conn.close()


@pytest.mark.parametrize(
    ("make", "doctor_says", "agent_does"),
    [
        (_fresh, "✔ buffer:", "opens"),
        (_not_a_database, "moves it aside", "quarantines"),
        (_records_without_key_check, "refuses to start", "refuses"),
    ],
)
def test_doctor_buffer_verdict_is_the_agents_at_start(
    tmp_path: Path, make: Callable[[Path, bytes], None], doctor_says: str, agent_does: str
) -> None:
    config = _installation(tmp_path, f'url = "mqtt://127.0.0.1:{free_port()}"')
    key = load_master_key(tmp_path / "state" / "keys" / "master.key")
    buffer = tmp_path / "state" / "buffer.db"
    make(buffer, key)
    result = heatgate("doctor", "--config", str(config), "--probe-timeout-s", "1")
    assert "Traceback" not in result.stderr
    assert doctor_says in result.stdout, result.stdout
    # What the agent does with the same file (the doctor changed nothing).
    try:
        opened = open_database(buffer, key, local_command=False)
    except StoreError:
        assert agent_does == "refuses"
        return
    opened.conn.close()
    opened.turnstile.close()
    quarantined = any(alarm.startswith("corrupt_db_quarantined") for alarm in opened.alarms)
    assert quarantined == (agent_does == "quarantines"), opened.alarms
    assert agent_does != "refuses"


# doctor --values and scan ---------------------------------------------------------------------------


def test_doctor_values_shows_the_decoded_values_of_a_live_read(
    tmp_path: Path, heatpump_sim: int, broker_factory: Callable[..., Broker]
) -> None:
    broker = broker_factory("plain")
    config = _installation(tmp_path, f'url = "{broker.url}"')
    with config.open("a") as out:
        out.write(
            f'[[sources]]\ntype = "modbus-tcp"\nname = "heatpump"\nport = {heatpump_sim}\n'
            '[[sources.devices]]\nname = "hp1"\nunit_id = 1\nprofile = "sim-heatpump"\ninterval_s = 1.0\n'
        )
    plain = heatgate("doctor", "--config", str(config), "--probe-timeout-s", "10")
    assert plain.returncode == 0, plain.stdout + plain.stderr
    assert "hp1.outdoor_temp_c" not in plain.stdout
    result = heatgate("doctor", "--values", "--config", str(config), "--probe-timeout-s", "10")
    assert result.returncode == 0, result.stdout + result.stderr
    block = result.stdout.split("✔ source heatpump: answers", 1)[1].split("\n✔", 1)[0]
    assert re.search(r"hp1\.outdoor_temp_c = -?\d+(\.\d+)? °C", block), block
    assert re.search(r"hp1\.flow_setpoint_c = \d", block), block


def test_scan_says_which_port_it_tried_and_that_a_serial_path_is_absent(tmp_path: Path) -> None:
    tcp = heatgate("scan", "modbus", "--host", "127.0.0.1", "--units", "1", "--timeout-ms", "100")
    assert tcp.returncode == 1 and "Traceback" not in tcp.stderr
    assert "tried port 502, the Modbus TCP default" in tcp.stdout and "--port" in tcp.stdout, tcp.stdout
    port = free_port()
    given = heatgate("scan", "modbus", "--host", "127.0.0.1", "--port", str(port), "--units", "1")
    assert given.returncode == 1 and f"tried port {port} as given" in given.stdout, given.stdout
    absent = heatgate("scan", "modbus", "--serial", str(tmp_path / "ttyUSB9"), "--units", "1")
    assert absent.returncode == 1 and "Traceback" not in absent.stderr
    assert f"{tmp_path / 'ttyUSB9'}: no such serial port" in absent.stderr, absent.stderr
    regular = tmp_path / "plain-file"
    regular.write_text("")
    not_serial = heatgate("scan", "modbus", "--serial", str(regular), "--units", "1")
    assert not_serial.returncode == 1 and "not a serial port" in not_serial.stderr
