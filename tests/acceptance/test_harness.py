"""The acceptance harness itself: the config is the example's with only ports and paths
changed, connections are counted at the broker, and a shipped gateway comes up, answers a
signed command and reports its register. These pass on any agent that starts."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.config import load_config
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.shipped import (
    ShippedRig,
    ShippedSims,
    broker_connections,
    derive_config,
    example_settings,
    to_toml,
)
from heatgate.agent.devtools.subscriber import Subscriber
from tests.acceptance.helpers import agent_cli

pytestmark = [pytest.mark.broker, pytest.mark.serial]


def _flatten(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flatten(value, f"{prefix}{key}."))
        return out
    if isinstance(data, list) and data and all(isinstance(v, dict) for v in data):
        out = {}
        for index, value in enumerate(data):
            out.update(_flatten(value, f"{prefix[:-1]}[{index}]."))
        return out
    return {prefix[:-1]: data}


def test_the_config_is_the_examples_with_only_ports_and_paths_changed(tmp_path: Path) -> None:
    sims = ShippedSims(tmp_path / "sims", heatpump_port=15020)
    example = example_settings()
    derived = derive_config(
        example,
        state_dir=tmp_path / "state",
        broker_url="mqtt://127.0.0.1:41883",
        sims=sims,
        command_public_key_file=tmp_path / "state" / "keys" / "command.pub",
        overrides={"mqtt": {"puback_timeout_s": 2.0}},
    )
    before, after = _flatten(example), _flatten(derived)
    changed = {key for key in before.keys() | after.keys() if before.get(key) != after.get(key)}
    assert changed == {
        "gateway.state_dir",
        "mqtt.url",
        "mqtt.puback_timeout_s",
        "keys.command_public_key_file",
        "sources[0].port",
        "sources[1].port",
        "sources[2].port",
        "sources[3].port",
    }
    assert after["sources[0].port"] == 15020 and after["sources[2].port"] == str(sims.p1_link)
    # every other setting, sources' devices and nodes included, survives the round trip through TOML
    without_new_key = derive_config(
        example, state_dir=tmp_path / "state", broker_url="mqtt://127.0.0.1:41883", sims=sims
    )
    path = tmp_path / "heatgate.toml"
    path.write_text(to_toml(without_new_key))
    config = load_config(path).config
    assert [s.name for s in config.sources] == [s["name"] for s in example["sources"]]
    assert config.mqtt.keepalive_s == example["mqtt"]["keepalive_s"]
    assert config.buffer.commit_interval_s == example["buffer"]["commit_interval_s"]
    assert config.policy_path.name == "privacy.toml" and config.privacy.policy_file is None  # the shipped policy


def test_connections_are_counted_at_the_broker(broker_factory: Callable[..., Broker]) -> None:
    broker = broker_factory()
    assert broker_connections(broker) == 0
    for _ in range(2):
        Subscriber("127.0.0.1", broker.port, ["x/#"], client_id="counted-client").start().stop()
    Subscriber("127.0.0.1", broker.port, ["x/#"], client_id="other-client").start().stop()
    assert broker_connections(broker, "counted-client") == 2
    assert broker_connections(broker) == 3


@pytest.mark.slow
def test_a_shipped_gateway_comes_up_answers_and_reports(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    assert rig.connections() == 1
    births = rig.subscriber.wait_for(lambda ms: any(m.topic == rig.gw.topic("state") for m in ms))
    assert json.loads([m for m in births if m.topic == rig.gw.topic("state")][-1].payload)["state"] == "online"
    response = rig.command("ping")
    assert response.outcome == "done" and response.result == {"pong": True}
    report = agent_cli("privacy", "report", "--json", "--config", str(rig.gw.config_path))
    assert report.returncode == 0, report.stderr
    assert "Traceback" not in report.stderr
    register = json.dumps(json.loads(report.stdout))
    assert all(f'"{stream}"' in register for stream in ("service", "telemetry", "analytics", "security"))
    assert rig.gw.running
