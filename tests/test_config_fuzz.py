"""Fuzzing the config loader: arbitrary documents give ConfigError with located issues, never a crash."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from heatgate.agent.config import Config, _source_issues
from heatgate.agent.config_machine import machine_issues
from heatgate.config import data_path
from heatgate.typedload import ConfigError, convert, load_toml

EXAMPLE = tomllib.loads(data_path("heatgate.example.toml").read_text())

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**40), 2**40),
    st.floats(allow_nan=False),
    st.text(max_size=12),
    st.sampled_from(["modbus-tcp", "modbus-rtu", "p1", "zwave", "/dev/ttyUSB0", "5"]),
)
values = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


def _mutate(document: Any, path: list[Any], value: Any) -> Any:
    """Replace the node at ``path`` (clamped to what exists) by ``value``."""
    if not path or not isinstance(document, dict | list) or not document:
        return value
    head, rest = path[0], path[1:]
    if isinstance(document, dict):
        keys = sorted(document)
        key = keys[head % len(keys)] if isinstance(head, int) else head
        copy = dict(document)
        copy[key] = _mutate(document.get(key), rest, value)
        return copy
    index = head % len(document) if isinstance(head, int) else 0
    copy_list = list(document)
    copy_list[index] = _mutate(document[index], rest, value)
    return copy_list


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(path=st.lists(st.one_of(st.integers(0, 20), st.text(max_size=6)), max_size=4), value=values)
@example(path=[12, 2, 3], value=[])  # a source whose type is a list: once a TypeError in the machine checks
@example(path=[12, 2, 4], value="/dev/\x00tty")  # a NUL byte in a path: os.stat raises
def test_mutated_example_never_crashes(path: list[Any], value: Any) -> None:
    document = _mutate(EXAMPLE, path, value)
    # The checks across entries and of the machine run on the raw document, valid or not.
    sources = document.get("sources") if isinstance(document, dict) else None
    assert all(issue.message for issue in _source_issues(sources))
    if isinstance(document, dict):
        assert all(issue.path and issue.message for issue in machine_issues(document))
    try:
        convert(document, Config, source="fuzz.toml")
    except ConfigError as exc:
        assert exc.issues, "a ConfigError must say what is wrong"
        assert all(isinstance(issue.message, str) and issue.message for issue in exc.issues)
        assert not any("regex" in issue.message for issue in exc.issues), exc.issues


@settings(max_examples=200, deadline=None)
@given(raw=st.binary(max_size=300))
def test_arbitrary_bytes_are_a_located_error(tmp_path_factory: Any, raw: bytes) -> None:
    path = Path(tmp_path_factory.mktemp("fuzz")) / "c.toml"
    path.write_bytes(raw)
    try:
        document = load_toml(path)
        convert(document, Config, source=str(path))
    except ConfigError as exc:
        assert exc.source == str(path) and exc.issues
