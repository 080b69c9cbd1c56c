"""``heatgate doctor``: check an installation end to end, one line per check."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich.console import Console

from heatgate.agent.cli.common import add_config_option, load_or_report
from heatgate.agent.cli.console import output_console
from heatgate.agent.doctor import run_checks
from heatgate.drivers.reading import Quality, Reading

DESCRIPTION = """\
Checks everything an installer must see working before leaving the site, and says what to
fix for each problem:
  config valid; privacy policy valid; key files present with safe modes; the clock plausible
  (certificates and timestamps depend on it); the device certificate matching the gateway id;
  serial ports present and openable; every source answering a live read (every Modbus device of
  it); the broker reachable over TLS and accepting the certificate; disk space for the buffer;
  the buffer's integrity, judged as the agent judges it at start. No check prints a traceback:
  what a check could not do is a failed check with its fix.

Readings taken by the probes are shown only (--values prints each source's decoded values):
they are never stored or published.
exit status: 0 if every check passed, 1 if any failed, 2 on a bad config.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "doctor",
        help="check an installation end to end and say what to fix",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument(
        "--probe-timeout-s",
        type=float,
        default=15.0,
        help="how long to wait for each source's first good reading (default: 15)",
    )
    parser.add_argument("--values", action="store_true", help="show each source's decoded values from the live read")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    console = output_console(soft_wrap=True)
    with console.status("checking the installation…"):
        checks = run_checks(loaded, probe_timeout_s=args.probe_timeout_s)
    for check in checks:
        mark = "[bold green]✔[/]" if check.ok else "[bold red]✘[/]"
        console.print(f"{mark} {check.name}: {check.detail}", markup=True)
        if not check.ok and check.fix:
            console.print(f"    [yellow]fix:[/] {check.fix}")
        if args.values and check.readings:
            _print_values(check.readings, console)
    failed = [c for c in checks if not c.ok]
    if failed:
        console.print(f"[bold red]{len(failed)} of {len(checks)} checks failed[/]")
        return 1
    console.print(f"[bold green]all {len(checks)} checks passed[/]")
    return 0


def _print_values(readings: Sequence[Reading], console: Console) -> None:
    """One line per point of a live read: device, point, value with unit and label, quality."""
    for reading in readings:
        value = "" if reading.value is None else str(reading.value)
        if reading.unit and value:
            value = f"{value} {reading.unit}"
        if reading.text:
            value = f"{value} ({reading.text})" if value else reading.text
        quality = "" if reading.quality is Quality.OK else f"  [red]{reading.quality.value}[/]"
        console.print(f"    {reading.device}.{reading.point} = {value or '-'}{quality}", markup=True, highlight=False)
