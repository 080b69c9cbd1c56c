"""Helpers shared by subcommands: the ``--config`` option and reporting a bad config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from heatgate.agent.config import ConfigError, LoadedConfig, load_config

DEFAULT_CONFIG = "/etc/heatgate/heatgate.toml"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        type=Path,
        default=Path(DEFAULT_CONFIG),
        metavar="FILE",
        help=f"configuration file (default: {DEFAULT_CONFIG})",
    )


def load_or_report(path: Path) -> LoadedConfig | None:
    """Load the config; on failure print every located problem to stderr and return None."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print_config_error(exc)
        return None


def print_config_error(exc: ConfigError) -> None:
    # Plain text: this is also the daemon's path, which keeps rich out of its memory.
    bold_red, reset = ("\033[1;31m", "\033[0m") if sys.stderr.isatty() else ("", "")
    sys.stderr.write(f"{bold_red}error{reset}: {exc.source}: {len(exc.issues)} problem(s)\n")
    for issue in exc.issues:
        sys.stderr.write(f"  {exc.source}: {issue}\n")
    sys.stderr.flush()
