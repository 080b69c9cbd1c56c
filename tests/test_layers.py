"""The layer contract (tools/check_layers.py): the real tree keeps it, and the check can fail."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_layers", REPO / "tools" / "check_layers.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


check_layers = _load_checker()


def test_real_tree_has_no_violation(capsys: pytest.CaptureFixture[str]) -> None:
    assert check_layers.main(["--root", str(REPO)]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    found = re.search(r"import contract: (\d+) violation\(s\) in (\d+) files", err)
    assert found, err
    assert found.group(1) == "0"
    assert int(found.group(2)) > 150  # every module was read, not a misconfigured handful


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A small tree in heatgate's shape: one clean module per layer, then the breaches below."""
    for package in ("heatgate", "agent", "agent/cli", "drivers", "drivers/sim", "buffer"):
        _write(tmp_path, f"{package}/__init__.py", "")
    _write(tmp_path, "heatgate/logs.py", "import logging\n")
    _write(tmp_path, "drivers/reading.py", "from heatgate.logs import get_logger\nfrom heatgate.config import path\n")
    _write(tmp_path, "drivers/sim/modbus.py", "from heatgate.drivers.reading import Reading\n")
    _write(tmp_path, "buffer/store.py", "from heatgate import logs\n")
    _write(tmp_path, "agent/daemon.py", "from heatgate.buffer.store import Store\nimport heatgate.drivers.reading\n")
    _write(tmp_path, "agent/cli/sim.py", "from heatgate.drivers.sim import modbus\n")  # the fence's opener
    _write(tmp_path, "tests/test_x.py", "from heatgate.drivers.sim import modbus\nfrom heatgate.agent import daemon\n")
    return tmp_path


def _violations(root: Path) -> list[tuple[str, int, str, str]]:
    found = check_layers.check(root, ("heatgate/logs.py", "agent", "drivers", "buffer", "tests"))
    return [(str(v.path), v.line, v.imported, v.rule) for v in found]


def test_clean_synthetic_tree_passes(tree: Path) -> None:
    assert _violations(tree) == []


def test_driver_importing_agent_is_reported(tree: Path) -> None:
    _write(tree, "drivers/p1.py", "from heatgate.logs import get_logger\nfrom heatgate.agent.config import P1Source\n")
    assert _violations(tree) == [
        ("drivers/p1.py", 2, "heatgate.agent.config", "layer 'drivers' may not import layer 'agent'")
    ]


def test_buffer_importing_a_driver_is_reported(tree: Path) -> None:
    _write(tree, "buffer/api.py", "import heatgate.drivers.reading\n")
    assert _violations(tree) == [
        ("buffer/api.py", 1, "heatgate.drivers.reading", "layer 'buffer' may not import layer 'drivers'")
    ]


def test_production_module_importing_a_simulator_is_reported(tree: Path) -> None:
    _write(tree, "agent/doctor.py", "from heatgate.drivers import sim\n")
    rule = "production code may not import heatgate.drivers.sim (simulators and dev tools are fenced)"
    assert _violations(tree) == [("agent/doctor.py", 1, "heatgate.drivers.sim", rule)]


def test_function_level_import_is_reported(tree: Path) -> None:
    body = "def build() -> None:\n    from heatgate.agent.daemon import Agent\n"
    _write(tree, "buffer/adapter.py", body)
    assert _violations(tree) == [
        ("buffer/adapter.py", 2, "heatgate.agent.daemon", "layer 'buffer' may not import layer 'agent'")
    ]


def test_type_checking_import_is_reported(tree: Path) -> None:
    body = "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from ..agent.config import Config\n"
    _write(tree, "drivers/modbus.py", body)
    assert _violations(tree) == [
        ("drivers/modbus.py", 4, "heatgate.agent.config", "layer 'drivers' may not import layer 'agent'")
    ]


def test_old_top_level_name_is_reported_anywhere(tree: Path) -> None:
    _write(tree, "tests/test_y.py", "from agent.config import Config\n")
    rule = "the top-level name 'agent' is not installed; import it as heatgate.agent"
    assert _violations(tree) == [("tests/test_y.py", 1, "agent.config", rule)]


def test_main_exits_1_and_prints_each_violation(tree: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _write(tree, "drivers/zwave.py", "import heatgate.agent\n")
    _write(tree, "agent/status.py", "from heatgate.drivers.sim.modbus import Simulator\n")
    assert check_layers.main(["--root", str(tree)]) == 1
    out, err = capsys.readouterr()
    assert sorted(out.splitlines()) == [
        "agent/status.py:1: heatgate.agent.status imports heatgate.drivers.sim.modbus: production code may not"
        " import heatgate.drivers.sim (simulators and dev tools are fenced)",
        "drivers/zwave.py:1: heatgate.drivers.zwave imports heatgate.agent: layer 'drivers' may not import layer"
        " 'agent'",
    ]
    assert "2 violation(s)" in err
