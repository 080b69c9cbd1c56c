"""A plain (non-editable) wheel carries the data files: the example config checks out."""

from __future__ import annotations

import os
import site
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

PROBE = "import agent, config; print(agent.__file__); print(config.data_path('heatgate.example.toml'))"
ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_installs_with_data_files(tmp_path: Path) -> None:
    wheel_dir = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "-w", str(wheel_dir), str(ROOT)],
        check=True, capture_output=True, timeout=300,
    )
    (wheel,) = wheel_dir.glob("heatgate-*.whl")

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    venv_python = venv / "bin" / "python"
    venv_site = Path(
        subprocess.run(
            [str(venv_python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
    )
    # Install the wheel (no editable hooks) into the fresh venv using this venv's pip.
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-compile",
         "--target", str(venv_site), str(wheel)],
        check=True, capture_output=True, timeout=300,
    )
    # Dependencies come from the test venv's site-packages, appended *after* the fresh venv's
    # own, via a .pth line (which does not run that directory's editable-install hooks).
    deps = sysconfig.get_paths()["purelib"]
    (venv_site / "zz_test_deps.pth").write_text(deps + "\n")

    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [str(venv_python), "-c", PROBE],
        check=True, capture_output=True, text=True, env=env, cwd=tmp_path,
    ).stdout.split()
    assert all(str(venv_site) in line for line in where), where

    example = Path(where[1])
    assert example.is_file()
    for name in ("privacy.toml",):
        assert (example.parent / name).is_file(), name
    assert list((example.parent / "profiles").glob("*.toml"))

    result = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "agent", "check-config", "--config", str(example)],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "is valid" in result.stdout
    assert site  # the module is imported for clarity of where paths come from
