"""The daemon's own health rules (what `heatgate status` and systemd's STATUS= say)."""

from __future__ import annotations

import time

import pytest

from agent import daemon
from agent.config import load_config
from config import data_path


def test_a_broker_that_stops_acknowledging_is_a_problem(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(daemon, "ACK_STALL_S", 0.05)
    agent = daemon.Agent(load_config(data_path("heatgate.example.toml")))
    moving = {"connected": True, "published": 10, "inflight": 3}
    assert agent._acknowledgement_stall_s(moving) is None
    time.sleep(0.1)
    stalled = agent._acknowledgement_stall_s(moving)  # nothing acknowledged since, 3 still in flight
    assert stalled is not None and stalled >= 0.05
    assert agent._acknowledgement_stall_s({**moving, "published": 11}) is None  # a PUBACK came
    time.sleep(0.1)
    assert agent._acknowledgement_stall_s({**moving, "published": 11, "inflight": 0}) is None  # idle is fine


def test_the_daemon_loads_neither_the_installer_tools_nor_rich(tmp_path: object) -> None:
    """`heatgate run` imports only its own command module, and keeps rich out (resident memory)."""
    import subprocess
    import sys

    probe = (
        "import sys\n"
        "from agent.cli import main\n"
        "code = main(['run', '--config', '/nonexistent/heatgate.toml'])\n"
        "rich = sys.modules.get('rich')\n"
        "print(code, rich is not None, 'agent.cli.privacy' in sys.modules, 'agent.cli.tail' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["2", "False", "False", "False"], result.stdout + result.stderr
    assert "file not found" in result.stderr
