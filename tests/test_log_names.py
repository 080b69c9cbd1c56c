"""One naming scheme for logs (see heatgate/logs.py): loggers ``heatgate.<area>``, events
``<area>.<event>`` in snake case, the event's area the module's logger's. Checked over the source
of every module, so that a new log call in another shape fails here."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import heatgate
from heatgate.logs import EVENT_NAME, LOGGER_NAME

PACKAGE = Path(heatgate.__file__).resolve().parent
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}
# A helper that logs for its owner builds the event from the owner's area: f"{prefix}.port_lost".
EVENT_TAIL = re.compile(r"^\.[a-z][a-z0-9]*(_[a-z0-9]+)*$")


def _is_logger(node: ast.expr) -> bool:
    name = node.attr if isinstance(node, ast.Attribute) else node.id if isinstance(node, ast.Name) else ""
    return name.lstrip("_") in ("log", "logger")


def _is_get_logger(func: ast.expr) -> bool:
    """``get_logger(...)`` or ``logs.get_logger(...)``: heatgate's, not structlog's own."""
    if isinstance(func, ast.Name):
        return func.id == "get_logger"
    return isinstance(func, ast.Attribute) and func.attr == "get_logger" and ast.unparse(func.value) == "logs"


def problems(source: str) -> list[str]:
    """Every departure from the scheme in one module's source, as ``line: what``."""
    tree = ast.parse(source)
    found: list[str] = []
    areas: set[str] = set()
    events: list[tuple[int, ast.expr]] = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if _is_get_logger(func):
            arg = node.args[0] if node.args else None
            match = (
                LOGGER_NAME.match(arg.value) if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else None
            )
            if match is None:
                found.append(
                    f"{node.lineno}: logger name {ast.unparse(arg) if arg else '(none)'} is not heatgate.<area>"
                )
            else:
                areas.add(match["area"])
        elif isinstance(func, ast.Attribute) and func.attr in LEVELS and _is_logger(func.value) and node.args:
            events.append((node.lineno, node.args[0]))
    for line, event in events:
        if isinstance(event, ast.Constant) and isinstance(event.value, str):
            match = EVENT_NAME.match(event.value)
            if match is None:
                found.append(f"{line}: event {event.value!r} is not <area>.<event> in snake case")
            elif areas and match["area"] not in areas:
                found.append(f"{line}: event {event.value!r} is not of this module's area {sorted(areas)}")
        elif isinstance(event, ast.JoinedStr) and len(event.values) == 2:
            prefix, tail = event.values
            if not (isinstance(prefix, ast.FormattedValue) and isinstance(tail, ast.Constant)):
                found.append(f"{line}: event {ast.unparse(event)} is not f'{{owner_area}}.<event>'")
            elif not EVENT_TAIL.match(str(tail.value)):
                found.append(f"{line}: event {ast.unparse(event)} does not end in .<event> in snake case")
        else:
            found.append(f"{line}: event {ast.unparse(event)} is not a literal <area>.<event>")
    return found


def _modules() -> list[Path]:
    paths = [p for p in PACKAGE.glob("*.py")]
    for folder in ("agent", "drivers", "buffer"):
        paths.extend(sorted((PACKAGE / folder).rglob("*.py")))
    return paths


def test_every_log_call_in_the_tree_follows_the_scheme() -> None:
    modules = _modules()
    assert len(modules) > 80
    report = {str(p.relative_to(PACKAGE)): problems(p.read_text(encoding="utf-8")) for p in modules}
    assert {path: found for path, found in report.items() if found} == {}


def test_the_tree_has_log_calls_to_check() -> None:
    calls = sum(
        1
        for p in _modules()
        for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in LEVELS
    )
    assert calls >= 40


GOOD = """
log = get_logger("heatgate.publish")
log.warning("publish.connection_lost", url=url)
self._log.info(f"{self.event_prefix}.port_open", source=name)
"""


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        (GOOD, []),
        ("log = get_logger(__name__)\n", ["1: logger name __name__ is not heatgate.<area>"]),
        ('log = get_logger("heatgate.drivers.p1")\n', ["1: logger name 'heatgate.drivers.p1' is not heatgate.<area>"]),
        (
            'log = get_logger("heatgate.publish")\nlog.warning("broker connection lost")\n',
            ["2: event 'broker connection lost' is not <area>.<event> in snake case"],
        ),
        (
            'log = get_logger("heatgate.publish")\nlog.info("publish.connectionLost")\n',
            ["2: event 'publish.connectionLost' is not <area>.<event> in snake case"],
        ),
        (
            'log = get_logger("heatgate.publish")\nlog.info("daemon.stopped")\n',
            ["2: event 'daemon.stopped' is not of this module's area ['publish']"],
        ),
        ("_log.error(message)\n", ["1: event message is not a literal <area>.<event>"]),
        (
            'self.log.info(f"{prefix}.Port lost")\n',
            ["1: event f'{prefix}.Port lost' does not end in .<event> in snake case"],
        ),
    ],
)
def test_departures_are_reported(source: str, expected: list[str]) -> None:
    assert problems(source) == expected
