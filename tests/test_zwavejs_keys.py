"""The Z-Wave network keys that ``provision`` makes for heatgate-zwave.service."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from heatgate.agent.provision import Answers, provision
from heatgate.drivers.zwavejs.keys import KEY_NAMES, SERVER_CONFIG_NAME, read_network_keys


def _answers(tmp_path: Path) -> Answers:
    return Answers(
        gateway_id="gw-zwave-0001",
        region="3511 AB",
        state_dir=tmp_path / "state",
        config_path=tmp_path / "heatgate.toml",
        broker_url="mqtt://127.0.0.1:1883",
    )


def test_provision_makes_four_distinct_keys_readable_only_by_the_owner(tmp_path: Path) -> None:
    report = provision(_answers(tmp_path))
    path = tmp_path / "state" / "keys" / SERVER_CONFIG_NAME
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    keys = read_network_keys(path)
    assert sorted(keys) == sorted(KEY_NAMES)
    assert all(len(key) == 16 for key in keys.values())
    assert len(set(keys.values())) == 4
    document = json.loads(path.read_text())
    assert document["storage"]["cacheDir"] == "/var/lib/heatgate-zwave"
    assert any(SERVER_CONFIG_NAME in line for line in report.created)
    assert not list(path.parent.glob("*.tmp"))


def test_keys_survive_provision_again_and_force(tmp_path: Path) -> None:
    provision(_answers(tmp_path))
    path = tmp_path / "state" / "keys" / SERVER_CONFIG_NAME
    first = read_network_keys(path)
    again = provision(_answers(tmp_path))
    assert any(SERVER_CONFIG_NAME in line for line in again.kept)
    provision(_answers(tmp_path), force=True)
    # New keys would orphan every securely included device: --force keeps them too.
    assert read_network_keys(path) == first
