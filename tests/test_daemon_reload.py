"""The agent as its own process (real Mosquitto, simulators): SIGHUP reloads without a
reconnect or a lost reading, a bad policy on reload is refused and reported, a second agent on
the same state directory is turned away, a serial source without its port says so."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.devtools.harness import GATEWAY_ID, Gateway, LoadRig, fast_policy, wait_until
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.subscriber import Received, Subscriber

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.serial]

STATE_TOPIC = f"heatgate/v1/{GATEWAY_ID}/state"


def _births(messages: list[Received]) -> int:
    return sum(1 for m in messages if m.topic == STATE_TOPIC and b"online" in m.payload)


def _records(messages: list[Received]) -> dict[str, dict[str, Any]]:
    """Every published record body by id (duplicates collapse)."""
    found: dict[str, dict[str, Any]] = {}
    for message in messages:
        try:
            document = json.loads(message.payload)
        except ValueError:
            continue
        if isinstance(document, dict):
            for record in document.get("records", []):
                if isinstance(record, dict) and "id" in record:
                    found[record["id"]] = record.get("body", {})
    return found


def _telemetry(bodies: dict[str, dict[str, Any]], window_s: int) -> list[dict[str, Any]]:
    return [b for b in bodies.values() if b.get("device") == "meter1" and b.get("window_s") == window_s]


def _messages(rig: LoadRig) -> list[Received]:
    with rig.subscriber._cond:
        return list(rig.subscriber.messages)


def _reloaded(count: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s.get("reload", {}).get("reloads") == count


def test_sighup_reloads_the_policy_keeps_the_connection_and_loses_no_reading(tmp_path: Path) -> None:
    with LoadRig(tmp_path / "rig", load=10.0, with_p1=False) as rig:
        gateway = rig.start()
        gateway.start()
        before = gateway.wait_status(lambda s: s["broker"].get("connected"), timeout_s=60, what="connected")
        wait_until(lambda: _telemetry(_records(_messages(rig)), 1), timeout_s=30, what="1-s telemetry")

        # A bad policy: refused with its located error, the agent runs on the old one.
        good = gateway.policy_path.read_text()
        gateway.policy_path.write_text(good + "\nbogus_key = 1\n")
        os.kill(gateway.pid, signal.SIGHUP)
        refused = gateway.wait_status(_reloaded(1), what="the refused reload")
        assert refused["reload"]["error"].startswith(f"{gateway.policy_path}: ")
        assert "bogus_key" in refused["reload"]["error"]
        assert any(p.startswith("reload refused") and "bogus_key" in p for p in refused["problems"])
        assert not refused["healthy"]
        status_cli = subprocess.run(
            [sys.executable, "-m", "heatgate", "status", "--socket", str(gateway.socket_path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert status_cli.returncode == 1 and "bogus_key" in status_cli.stdout

        # A good, changed policy (2-s telemetry windows): applied, the problem gone.
        gateway.policy_path.write_text(fast_policy(window_s=2))
        os.kill(gateway.pid, signal.SIGHUP)
        applied = gateway.wait_status(_reloaded(2), what="the applied reload")
        assert applied["reload"]["error"] is None and applied["reload"]["restart_needed"] == []
        assert not any("reload" in p for p in applied["problems"]), applied["problems"]
        wait_until(lambda: _telemetry(_records(_messages(rig)), 2), timeout_s=30, what="2-s telemetry")
        wait_until(
            lambda: len([b for b in _records(_messages(rig)).values() if b.get("event") == "agent.reload"]) == 2,
            timeout_s=30,
            what="2 reload audits",
        )
        audits = [b for b in _records(_messages(rig)).values() if b.get("event") == "agent.reload"]
        assert sorted(b["outcome"] for b in audits) == ["ok", "refused"]

        # Still the same process, the same connection, the sources never restarted.
        assert gateway.running
        assert _births(_messages(rig)) == 1
        assert applied["broker"]["connected_since"] == before["broker"]["connected_since"]
        assert applied["broker"]["reconnects"] == before["broker"]["reconnects"]  # counts connections
        assert all(s["restarts"] == 0 for s in applied["sources"].values())

        # Nothing lost: freeze the meter, then every good reading of one of its points is in
        # exactly the published or still-queued telemetry, across both reloads.
        meter_sim = rig.sims[1]
        meter_sim.send_signal(signal.SIGSTOP)
        try:
            frozen = gateway.wait_status(
                lambda s: s["sources"]["meter"]["devices"]["meter1"].get("failing_since_ts") is not None,
                timeout_s=30,
                what="the meter not answering",
            )
            time.sleep(1.0)
            frozen = gateway.wait_status(lambda s: True)
            ok_readings = frozen["sources"]["meter"]["quality"].get("ok", 0)
            assert gateway.stop() == 0
        finally:
            meter_sim.send_signal(signal.SIGCONT)
        bodies = _records(_messages(rig))
        for record in gateway.export():
            bodies[record.id] = json.loads(record.payload)
        samples = sum(
            b.get("samples", 0)
            for b in bodies.values()
            if b.get("device") == "meter1" and b.get("point") == "voltage_l1_v" and b.get("agg") == "mean"
        )
        # The profile's 15 polled points every poll, and its identifier once (max age 1 h).
        assert samples * 15 + 1 == ok_readings, (samples, ok_readings)


def test_a_second_agent_on_the_same_state_dir_exits_1_and_the_first_runs_on(
    tmp_path: Path, plain_broker: Broker
) -> None:
    with (
        Subscriber("127.0.0.1", plain_broker.port, ["heatgate/#"]) as subscriber,
        Gateway(tmp_path / "gw", broker_url=plain_broker.url) as gateway,
    ):
        gateway.provision()
        gateway.start()
        first = gateway.wait_status(lambda s: s["broker"].get("connected"), timeout_s=60, what="connected")

        second = subprocess.run(
            [sys.executable, "-m", "heatgate", "run", "--config", str(gateway.config_path)],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert second.returncode == 1
        assert (
            f"heatgate: another agent (pid {gateway.pid}) is running on {gateway.state}; stop it first"
            in second.stderr.splitlines()
        )

        # The first one is untouched: its socket answers, its connection is the one it had.
        after = gateway.wait_status(lambda s: True)
        assert gateway.running and after["broker"]["connected"]
        assert after["broker"].get("connected_since") == first["broker"].get("connected_since")
        assert after["broker"]["reconnects"] == first["broker"]["reconnects"]  # counts connections
        with subscriber._cond:
            assert _births(list(subscriber.messages)) == 1
        lock = gateway.state / "agent.lock"
        assert lock.stat().st_mode & 0o777 == 0o600 and lock.read_text().strip() == str(gateway.pid)

        # A kill -9 leaves the file but not the lock: the next agent starts.
        gateway.kill9()
        gateway.start()
        gateway.wait_status(lambda s: s["broker"].get("connected"), timeout_s=60, what="restarted")
        assert gateway.stop() == 0


def test_a_serial_source_without_its_port_is_waiting_for_it(tmp_path: Path, plain_broker: Broker) -> None:
    missing = tmp_path / "no-such-tty"
    sources = f'\n[[sources]]\ntype = "p1"\nname = "smartmeter"\nport = "{missing}"\n'
    with Gateway(tmp_path / "gw", broker_url=plain_broker.url, sources_toml=sources) as gateway:
        gateway.provision()
        gateway.start()
        document = gateway.wait_status(
            lambda s: s["sources"]["smartmeter"]["state"] == "waiting-for-port", timeout_s=60, what="waiting-for-port"
        )
        source = document["sources"]["smartmeter"]
        assert str(missing) in source["last_error"]
        assert not document["healthy"]
        assert any(
            p.startswith("source smartmeter waiting for its port: ") and str(missing) in p for p in document["problems"]
        )
        shown = subprocess.run(
            [sys.executable, "-m", "heatgate", "status", "--socket", str(gateway.socket_path)],
            capture_output=True,
            text=True,
            timeout=60,
            env={**os.environ, "COLUMNS": "200"},
        )
        assert shown.returncode == 1 and "waiting-for-port" in shown.stdout
        assert gateway.stop() == 0
