"""The wheel as users get it: one import root, every module, the data files; built from a copy.

The wheel is built from a copy of the tree, never inside the checkout: setuptools leaves
``build/lib`` behind and copies whatever is there into the next wheel.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE_FOLDERS = ("agent", "drivers", "buffer", "config")
PROBE = (
    "import heatgate.agent as a, heatgate.config as c; print(a.__file__); print(c.data_path('heatgate.example.toml'))"
)


def _copy_tree(destination: Path) -> Path:
    ignore = shutil.ignore_patterns(
        ".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache", ".hypothesis"
    )
    return Path(shutil.copytree(ROOT, destination, symlinks=True, ignore=ignore))


def _source_modules() -> set[str]:
    """``heatgate/...py`` names of every module in the source tree, as the wheel must hold them."""
    names = {f"heatgate/{path.name}" for path in (ROOT / "heatgate").glob("*.py")}
    for folder in PACKAGE_FOLDERS:
        names |= {f"heatgate/{path.relative_to(ROOT).as_posix()}" for path in (ROOT / folder).rglob("*.py")}
    return names


@pytest.mark.slow
def test_wheel_has_one_root_every_module_and_installs_with_data_files(tmp_path: Path) -> None:
    tree = _copy_tree(tmp_path / "tree")
    wheel_dir = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(tree)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheel_dir.glob("heatgate-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        members = set(archive.namelist())
    top_level = {name.split("/")[0] for name in members}
    dist_info = {name for name in top_level if name.endswith(".dist-info")}
    assert top_level - dist_info == {"heatgate"}, sorted(top_level)
    assert len(dist_info) == 1
    missing = _source_modules() - members
    assert not missing, sorted(missing)
    assert {"heatgate/py.typed", "heatgate/config/privacy.toml", "heatgate/config/heatgate.example.toml"} <= members
    assert not any("/tests/" in name or name.startswith("bench/") for name in members)

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    venv_python = venv / "bin" / "python"
    venv_site = Path(
        subprocess.run(
            [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    # Install the wheel (no editable hooks) into the fresh venv using this venv's pip.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile", "--target", str(venv_site), str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    # Dependencies come from the test venv's site-packages, appended *after* the fresh venv's
    # own, via a .pth line (which does not run that directory's editable-install hooks).
    (venv_site / "zz_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(venv_python), "-c", PROBE], check=True, capture_output=True, text=True, env=env, cwd=tmp_path
    ).stdout.split()
    assert all(str(venv_site) in line for line in where), where

    example = Path(where[1])
    assert (example.parent / "privacy.toml").is_file()
    assert list((example.parent / "profiles").glob("*.toml"))

    # A working directory with folders named like the old top-level packages shadows nothing.
    for shadow in PACKAGE_FOLDERS:
        (tmp_path / shadow).mkdir(exist_ok=True)
        (tmp_path / shadow / "__init__.py").write_text("raise ImportError('shadowed')\n")
    result = subprocess.run(
        [str(venv_python), "-m", "heatgate", "check-config", "--offline", "--config", str(example)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
