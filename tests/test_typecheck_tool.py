"""tools/typecheck.py: mypy's source count against the Python files it should have checked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("typecheck_tool", ROOT / "tools" / "typecheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


typecheck = _tool()


def test_the_count_is_read_from_success_and_failure_summaries() -> None:
    assert typecheck.checked_count("Success: no issues found in 221 source files\n") == 221
    assert typecheck.checked_count("a.py:1: error: x\nFound 3 errors in 2 files (checked 17 source files)\n") == 17
    assert typecheck.checked_count("Success: no issues found in 1 source file\n") == 1
    assert typecheck.checked_count("mypy: can't read file 'x'\n") is None


def _tree(root: Path, packages: list[str]) -> None:
    """A small checkout: heatgate/ whose subpackage is a symlink, as in the real tree, plus tests/ and bench/."""
    (root / "agent").mkdir(parents=True)
    (root / "agent" / "__init__.py").write_text("")
    (root / "agent" / "core.py").write_text("def f() -> int:\n    return 1\n")
    (root / "agent" / "__pycache__").mkdir()
    (root / "agent" / "__pycache__" / "stale.py").write_text("")
    (root / "heatgate").mkdir()
    (root / "heatgate" / "__init__.py").write_text("")
    (root / "heatgate" / "agent").symlink_to("../agent")
    for folder in ("tests", "bench"):
        (root / folder).mkdir()
        (root / folder / "__init__.py").write_text("")
    (root / "tests" / "test_core.py").write_text(
        "from heatgate.agent.core import f\n\n\ndef test_f() -> None:\n    assert f() == 1\n"
    )
    listed = ", ".join(f'"{p}"' for p in packages)
    (root / "pyproject.toml").write_text(f"[tool.mypy]\npackages = [{listed}]\ndisallow_untyped_defs = true\n")


def test_files_are_counted_through_symlinks_without_caches(tmp_path: Path) -> None:
    _tree(tmp_path, ["heatgate", "tests", "bench"])
    names = {p.relative_to(tmp_path).as_posix() for p in typecheck.python_files(tmp_path)}
    assert names == {
        "heatgate/__init__.py",
        "heatgate/agent/__init__.py",
        "heatgate/agent/core.py",
        "tests/__init__.py",
        "tests/test_core.py",
        "bench/__init__.py",
    }


@pytest.mark.slow
def test_a_mapping_that_leaves_out_tests_fails_and_a_complete_one_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    short, full = tmp_path / "short", tmp_path / "full"
    _tree(short, ["heatgate"])
    _tree(full, ["heatgate", "tests", "bench"])
    assert typecheck.main(["--root", str(short)]) == 1
    assert "checked 3 source files, but" in capsys.readouterr().err
    assert typecheck.main(["--root", str(full)]) == 0
    assert "6 sources checked" in capsys.readouterr().out
