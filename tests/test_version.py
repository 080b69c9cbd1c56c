"""One version: the package's literal, pyproject.toml's and the installed distribution's agree."""

from __future__ import annotations

import tomllib
from importlib import metadata
from pathlib import Path

import heatgate

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_literal_is_the_projects_and_the_installed_one() -> None:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        declared = tomllib.load(handle)["project"]["version"]
    assert heatgate.__version__ == declared == metadata.version("heatgate")
