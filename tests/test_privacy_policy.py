"""The register loads, and every mistake in it is reported with its location."""

from __future__ import annotations

import copy
import tomllib
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from heatgate.agent.privacy.policy import RegionPolicy, load_policy, parse_policy
from heatgate.agent.privacy.region import generalise_region
from heatgate.config import data_path
from heatgate.typedload import ConfigError


def _default() -> dict[str, Any]:
    return tomllib.loads(data_path("privacy.toml").read_text())


def test_shipped_policy_defaults() -> None:
    policy = load_policy(data_path("privacy.toml"))
    assert set(policy.streams) == {"service", "telemetry", "analytics", "security", "connectivity"}
    assert policy.retention_s()["connectivity"] == 14 * 86400
    assert policy.retention_s()["security"] == 180 * 86400
    assert policy.retention_s()["analytics"] <= 2 * 366 * 86400
    assert policy.priority("service") == 0
    assert min(policy.priority(s) for s in policy.streams) == 0
    assert policy.streams["analytics"].objectable and not policy.streams["analytics"].carries_gateway_id
    assert policy.streams["analytics"].time_granularity_s == 3600
    assert policy.streams["telemetry"].window_s("smart-meter", frozenset()) == 86400
    assert policy.streams["telemetry"].window_s("smart-meter", frozenset({"p1-15min"})) == 900


def _issues(data: dict[str, Any]) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_policy(data, source="p.toml")
    return [str(issue) for issue in info.value.issues]


def test_every_mistake_located() -> None:
    data = _default()
    data["streams"]["analytics"]["kinds"].append("identifier")
    data["streams"]["analytics"]["aggregation"]["fault"] = ["change"]
    data["streams"]["analytics"]["carries_gateway_id"] = True
    data["streams"]["telemetry"]["fields"].append("serial")
    data["streams"]["service"]["route"] = "service/{gateway}"
    data["streams"]["telemetry"]["windows"][0]["consent"] = "nope"
    del data["streams"]["connectivity"]
    issues = _issues(data)
    expected = [
        "streams.analytics.kinds[3]: identifiers never enter a stream in clear",
        "streams.analytics.aggregation.fault[0]: 'change' not allowed here; allowed: count",
        "streams.analytics.carries_gateway_id: analytics is published without the gateway id",
        "streams.telemetry.fields[14]: unknown field 'serial'",
        "streams.service.route: unknown placeholder(s) gateway; allowed: {kind}",
        "streams.telemetry.windows[0].consent: unknown consent 'nope'",
        "streams.connectivity: missing required stream",
    ]
    for text in expected:
        assert any(issue.startswith(text) for issue in issues), (text, issues)


def test_type_errors_located_all_at_once(tmp_path: Path) -> None:
    data = copy.deepcopy(_default())
    data["streams"]["security"]["retention_s"] = "long"
    data["streams"]["telemetry"]["legal_basis"] = "because"
    data["streams"]["service"]["prioriti"] = 0
    text = tmp_path / "p.toml"
    text.write_text(_to_toml(data))
    with pytest.raises(ConfigError) as info:
        load_policy(text)
    paths = [issue.path for issue in info.value.issues]
    assert "streams.security.retention_s" in paths and "streams.telemetry.legal_basis" in paths
    assert "streams.service.prioriti" in paths


def _to_toml(data: dict[str, Any]) -> str:
    """Minimal TOML writer for the policy's shape (tables of tables, scalars, lists)."""
    import json

    lines: list[str] = []

    def scalar(value: Any) -> str:
        return json.dumps(value) if not isinstance(value, bool) else str(value).lower()

    def table(prefix: str, value: dict[str, Any]) -> None:
        simple = {
            k: v
            for k, v in value.items()
            if not isinstance(v, dict) and not (isinstance(v, list) and v and isinstance(v[0], dict))
        }
        lines.append(f"[{prefix}]")
        for key, item in simple.items():
            lines.append(f"{json.dumps(key)} = {scalar(item) if not isinstance(item, list) else json.dumps(item)}")
        for key, item in value.items():
            if isinstance(item, dict):
                table(f"{prefix}.{json.dumps(key)}", item)
            elif isinstance(item, list) and item and isinstance(item[0], dict):
                for entry in item:
                    lines.append(f"[[{prefix}.{json.dumps(key)}]]")
                    lines.extend(f"{json.dumps(k)} = {json.dumps(v)}" for k, v in entry.items())

    for key, item in data.items():
        if not isinstance(item, dict):
            lines.insert(0, f"{key} = {scalar(item)}")
    for key, item in data.items():
        if isinstance(item, dict):
            table(json.dumps(key), item)
    return "\n".join(lines) + "\n"


@given(
    st.integers(1000, 9999),
    st.sampled_from(["", " ", "  "]),
    st.text("ABCDEFGHJKLMNPRSTVWXYZabcz", min_size=2, max_size=2) | st.just(""),
)
def test_dutch_postcode_becomes_its_two_digit_region(digits: int, space: str, letters: str) -> None:
    region = generalise_region(f"{digits}{space}{letters}", RegionPolicy(allow_pattern="^[A-Z]{2}-[A-Z0-9]{1,3}$"))
    assert region == str(digits)[:2]
    assert generalise_region(f"{digits} {letters}", RegionPolicy(postcode_digits=1)) == str(digits)[0]


@given(st.text(max_size=40))
def test_other_regions_pass_only_when_allowed(raw: str) -> None:
    policy = RegionPolicy(allow_pattern="^[A-Z]{2}-[A-Z0-9]{1,3}$")
    region = generalise_region(raw, policy)
    assert region == "unknown" or ((len(region) <= 6) and (region.isdigit() or region[2] == "-"))


def test_addresses_never_pass() -> None:
    policy = RegionPolicy(allow_pattern="^[A-Z]{2}-[A-Z0-9]{1,3}$")
    assert generalise_region("Oudegracht 123, 3511 AB Utrecht", policy) == "unknown"
    assert generalise_region("NL-UT", policy) == "NL-UT"
    assert generalise_region("NL-UT", RegionPolicy()) == "unknown"
