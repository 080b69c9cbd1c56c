"""``heatgate profile check FILE``: validate a device profile and print its read plan."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from heatgate.agent.cli import EXIT_OK, EXIT_USAGE
from heatgate.agent.cli.common import print_config_error
from heatgate.drivers.modbus.planner import Block, plan_profile
from heatgate.drivers.modbus.profile import Profile, load_profile
from heatgate.typedload import ConfigError

DESCRIPTION = """\
Validates a Modbus device profile (every key, type, range and address; overlaps; the read
limits) and prints the read plan the gateway would poll with: one row per request, its
registers, its poll class and its points, and the requests per poll cycle against one
request per point. The format is documented in docs/profiles.md.

FILE is a path or the name of a shipped profile (sdm630). Nothing is contacted.
exit status: 0 if the profile is valid, 2 with every problem located otherwise.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "profile",
        help="device profiles: validate one and print its read plan",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate a profile and print its read plan",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  heatgate profile check ./my-heatpump.toml\n  heatgate profile check sdm630 --json",
    )
    check.add_argument("file", metavar="FILE", help="profile file, or a shipped profile's name")
    check.add_argument("--json", action="store_true", help="print the plan as JSON")
    check.set_defaults(handler=run_check)


def _resolve(text: str) -> str:
    path = Path(text)
    if path.exists() or "/" in text or text.endswith(".toml"):
        return str(path.resolve())
    return text  # a shipped name


def run_check(args: argparse.Namespace) -> int:
    try:
        profile = load_profile(_resolve(args.file))
    except ConfigError as exc:
        print_config_error(exc)
        return EXIT_USAGE
    blocks = plan_profile(profile)
    if args.json:
        plan = {
            "profile": profile.name,
            "points": len(profile.points),
            "requests_per_cycle": len(blocks),
            "blocks": [
                {
                    "table": b.table,
                    "start": b.start,
                    "count": b.count,
                    "max_age_s": b.max_age_s,
                    "points": [p.name for p in b.points],
                }
                for b in blocks
            ],
        }
        json.dump(plan, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return EXIT_OK
    _print_plan(profile, blocks)
    return EXIT_OK


def _print_plan(profile: Profile, blocks: list[Block]) -> None:
    from rich.table import Table

    from heatgate.agent.cli.console import output_console

    console = output_console()
    console.print(f"[bold green]ok[/]: profile [bold]{profile.name}[/] ({profile.vendor} {profile.model}) is valid")
    if profile.reference:
        console.print(f"reference  {profile.reference}")
    limits = [
        f"max {profile.max_registers_per_read} registers per read" if profile.max_registers_per_read else "",
        "even register counts" if profile.even_register_count else "",
        f"gaps of at most {profile.max_gap_registers}" if profile.max_gap_registers is not None else "",
        f"{len(profile.unreadable)} unreadable range(s)" if profile.unreadable else "",
        f"{len(profile.init)} init write(s)" if profile.init else "",
    ]
    said = [text for text in limits if text]
    if said:
        console.print("limits     " + ", ".join(said))
    table = Table(title="read plan (one row per request)", title_justify="left")
    for column in ("#", "table", "registers", "count", "every", "points"):
        table.add_column(column, justify="right" if column in ("#", "count") else "left")
    for index, block in enumerate(blocks, 1):
        unused = block.count - sum(p.count for p in block.points)
        every = "each poll" if block.max_age_s is None else f"{block.max_age_s:g} s"
        names = ", ".join(p.name for p in block.points) + (f"  [dim](+{unused} unused)[/]" if unused else "")
        table.add_row(str(index), block.table, f"{block.start}-{block.end - 1}", str(block.count), every, names)
    console.print(table)
    console.print(
        f"{len(profile.points)} point(s) in {len(blocks)} request(s) per full poll cycle "
        f"(one request per point: {len(profile.points)})"
    )
