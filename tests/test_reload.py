"""What a reload applies and what needs a restart (agent/reload.py), and the pipeline's switch
to a new policy (nothing open is lost)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from heatgate.agent.config import load_config
from heatgate.agent.devtools.harness import fast_policy
from heatgate.agent.privacy.policy import load_policy, parse_policy
from heatgate.agent.reload import config_restart_needed, plan_reload, policy_restart_needed
from heatgate.config import data_path
from heatgate.typedload import ConfigError, load_toml


def _write_config(tmp_path: Path, policy: Path, extra: str = "") -> Path:
    text = data_path("heatgate.example.toml").read_text()
    text = re.sub(r"(?m)^policy_file = .*$", "", text)
    path = tmp_path / "heatgate.toml"
    path.write_text(text.replace("[privacy]", f'[privacy]\npolicy_file = "{policy}"', 1) + extra)
    return path


def test_an_unchanged_config_and_policy_change_nothing(tmp_path: Path) -> None:
    policy = tmp_path / "privacy.toml"
    policy.write_text(fast_policy(1))
    path = _write_config(tmp_path, policy)
    running = load_config(path).config
    plan = plan_reload(path, running, load_policy(policy))
    assert not plan.policy_changed and plan.restart_needed == ()


def test_a_changed_policy_applies_and_a_changed_status_socket_needs_a_restart(tmp_path: Path) -> None:
    policy = tmp_path / "privacy.toml"
    policy.write_text(fast_policy(1))
    path = _write_config(tmp_path, policy)
    running, running_policy = load_config(path).config, load_policy(policy)
    policy.write_text(fast_policy(2))
    path.write_text(path.read_text().replace("[status]", '[status]\nsocket_path = "/run/elsewhere/status.sock"', 1))
    plan = plan_reload(path, running, running_policy)
    assert plan.policy_changed
    assert plan.policy.streams["telemetry"].time_granularity_s == 2
    assert plan.restart_needed == ("status",)


def test_config_sections_that_need_a_restart_are_named(tmp_path: Path) -> None:
    import msgspec

    running = load_config(data_path("heatgate.example.toml")).config
    changed = msgspec.structs.replace(
        running,
        mqtt=msgspec.structs.replace(running.mqtt, keepalive_s=running.mqtt.keepalive_s + 1),
        privacy=msgspec.structs.replace(
            running.privacy,
            policy_file="/elsewhere/privacy.toml",
            pseudonym_epoch_days=running.privacy.pseudonym_epoch_days + 1,
        ),
    )
    assert config_restart_needed(running, changed) == ["mqtt", "privacy.pseudonym_epoch_days"]


def test_a_changed_retention_needs_a_restart() -> None:
    data = load_toml(data_path("privacy.toml"))
    running = parse_policy(data)
    data["streams"]["telemetry"]["retention_s"] = running.streams["telemetry"].retention_s / 2
    assert policy_restart_needed(running, parse_policy(data)) == ["privacy policy retention of telemetry"]
    assert policy_restart_needed(running, running) == []


def test_a_bad_policy_is_a_located_error_and_nothing_is_planned(tmp_path: Path) -> None:
    policy = tmp_path / "privacy.toml"
    policy.write_text(fast_policy(1))
    path = _write_config(tmp_path, policy)
    running, running_policy = load_config(path).config, load_policy(policy)
    policy.write_text(fast_policy(1) + "\nbogus_key = 1\n")
    with pytest.raises(ConfigError) as caught:
        plan_reload(path, running, running_policy)
    assert caught.value.source == str(policy)
    assert any("bogus_key" in str(issue) for issue in caught.value.issues)


def test_adopting_a_policy_closes_the_open_windows_under_the_old_one() -> None:
    import asyncio

    from heatgate.agent.privacy.pipeline import Pipeline
    from heatgate.agent.privacy.pseudonym import PseudonymKeys
    from heatgate.agent.privacy.state import PrivacyState
    from heatgate.drivers.reading import PointKind, Quality, Reading
    from tests.support.memory_state import MemoryState

    config = load_config(data_path("heatgate.example.toml")).config
    old = parse_policy(load_toml(data_path("privacy.toml")))
    store = MemoryState()

    async def build() -> Pipeline:
        state = await PrivacyState.load(store)
        keys = await PseudonymKeys.load(store, epoch_days=90)
        return Pipeline(old, gateway=config.gateway, keys=keys, state=state, clock=lambda: 1_000_030.0)

    pipeline = asyncio.run(build())
    readings = [
        Reading(
            source="hp",
            device="hp1",
            device_type="heatpump",
            point="flow_temp_c",
            kind=PointKind.MEASUREMENT,
            value=20.0 + i,
            unit="°C",
            quality=Quality.OK,
            ts=1_000_000.0 + i,
        )
        for i in range(3)
    ]
    assert pipeline.process(readings) == []  # a 5-minute window is open: nothing yet
    new = parse_policy(load_toml(data_path("privacy.toml")))
    closing = pipeline.adopt_policy(new)
    telemetry = [r for r in closing if r.stream == "telemetry"]
    assert telemetry, "the open window was dropped instead of closed"
    assert pipeline.policy is new
    assert pipeline.flush(force=True) == []  # nothing left open under the old policy
