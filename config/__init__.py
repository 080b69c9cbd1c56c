"""Data shipped with heatgate: the example config, the default privacy policy, device profiles.

This package holds no code beyond locating its own files, so that a plain wheel install
carries them and every part of the agent finds them the same way.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path


def data_path(*parts: str) -> Path:
    """Path of a shipped data file, e.g. ``data_path("profiles", "sim-heatpump.toml")``."""
    root = resources.files(__name__)
    target = root.joinpath(*parts)
    return Path(str(target))


def profiles_dir() -> Path:
    return data_path("profiles")
