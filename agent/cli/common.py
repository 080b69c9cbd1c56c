"""Helpers shared by subcommands: the ``--config`` option and reporting a bad config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from agent.config import ConfigError, LoadedConfig, load_config

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
    console = Console(stderr=True, highlight=False, soft_wrap=True)
    console.print(f"[bold red]error[/]: {exc.source}: {len(exc.issues)} problem(s)")
    for issue in exc.issues:
        console.print(f"  {exc.source}: {issue}", markup=False)
    sys.stderr.flush()
