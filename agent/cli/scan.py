"""``heatgate scan modbus``: find the unit ids that answer on a TCP host or a serial bus.

Each unit id is asked for one register (holding 0); any answer, even an
exception response, means a device is there. For each device found, every shipped profile's
signature point is read to say which profile fits, where one can tell.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TYPE_CHECKING

from heatgate.agent.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from heatgate.drivers.modbus.profile import Profile

DESCRIPTION = """\
Finds the Modbus unit ids that answer on a TCP host (--host) or a serial bus (--serial) and
says which device profile fits each, where its signature register tells: the shipped ones,
or the installer's own given with --profile.
"""


def _units(text: str) -> list[int]:
    units: list[int] = []
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi) if sep else int(lo)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected unit ids like 1-247 or 1,2,10, got {text!r}") from None
        if not 0 <= first <= last <= 247:
            raise argparse.ArgumentTypeError(f"unit ids are 0..247, got {part!r}")
        units.extend(range(first, last + 1))
    return units


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "scan",
        help="find devices: Modbus unit ids on a host or bus",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    kinds = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    modbus = kinds.add_parser(
        "modbus",
        help="scan Modbus unit ids",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  heatgate scan modbus --host 127.0.0.1 --port 5020 --units 1-10\n"
        "  heatgate scan modbus --serial /dev/ttyUSB0 --baud 9600",
    )
    where = modbus.add_mutually_exclusive_group(required=True)
    where.add_argument("--host", help="Modbus TCP host")
    where.add_argument("--serial", metavar="DEV", help="serial port of an RS-485 bus (Modbus RTU)")
    modbus.add_argument("--port", type=int, default=None, help="TCP port (default 502; 5020 for the simulator)")
    modbus.add_argument("--baud", type=int, default=9600, help="RTU baud rate (default 9600)")
    modbus.add_argument("--parity", choices=["N", "E", "O"], default="N", help="RTU parity (default N)")
    modbus.add_argument(
        "--units",
        type=_units,
        default=None,
        help="unit ids to try, e.g. 1-247 or 1,2,10 (default: 1-247 on a bus, 0-247 on TCP)",
    )
    modbus.add_argument("--timeout-ms", type=int, default=200, help="wait per unit id (default 200)")
    modbus.add_argument(
        "--profile",
        action="append",
        metavar="FILE",
        help="try this profile's signature (a path or shipped name) instead of the shipped ones; repeatable",
    )
    modbus.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    if args.timeout_ms <= 0:
        print("heatgate scan: --timeout-ms must be positive")
        return EXIT_USAGE
    if args.serial:
        problem = _serial_problem(args.serial)
        if problem:
            print(f"heatgate scan: {args.serial}: {problem}", file=sys.stderr)
            return EXIT_FAILURE
    profiles = None
    if args.profile:
        from pathlib import Path

        from heatgate.agent.cli.common import print_config_error
        from heatgate.drivers.modbus.profile import load_profile
        from heatgate.typedload import ConfigError

        profiles = []
        for text in args.profile:
            name = str(Path(text).resolve()) if Path(text).exists() or "/" in text or text.endswith(".toml") else text
            try:
                profiles.append(load_profile(name))
            except ConfigError as exc:
                print_config_error(exc)
                return EXIT_USAGE
        unsigned = [p.name for p in profiles if p.signature is None]
        if unsigned:
            print(f"heatgate scan: profile(s) without a signature cannot identify a device: {', '.join(unsigned)}")
    return asyncio.run(_scan(args, profiles))


def _serial_problem(port: str) -> str:
    """Why ``port`` cannot be a serial bus to scan, as a sentence; empty when it can be tried."""
    import os
    import stat

    try:
        info = os.stat(port)
    except FileNotFoundError:
        return "no such serial port (is the adapter plugged in? `ls -l /dev/serial/by-id/` lists the connected ones)"
    except OSError as exc:
        return f"cannot be used: {exc.strerror}"
    if not stat.S_ISCHR(info.st_mode):
        return "not a serial port (expected a character device such as /dev/ttyUSB0)"
    if not os.access(port, os.R_OK | os.W_OK):
        return "permission denied (add yourself to the dialout group, or run the scan with sudo)"
    return ""


def _port_hint(args: argparse.Namespace, port: int) -> str:
    """Which TCP port was tried and how to try another."""
    if args.port is None:
        return f"tried port {port}, the Modbus TCP default; if the device listens on another one, give it with --port N"
    return f"tried port {port} as given with --port"


async def _scan(args: argparse.Namespace, profiles: list[Profile] | None = None) -> int:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from heatgate.agent.cli.console import output_console
    from heatgate.drivers.modbus.link import ModbusLink
    from heatgate.drivers.modbus.scan import identify, probe_unit

    console = output_console(highlight=True)
    timeout_s = args.timeout_ms / 1000.0
    port = args.port or 502
    if args.host:
        link = ModbusLink.tcp(args.host, port, timeout_s=timeout_s)
        where = f"{args.host}:{port}"
        units = args.units or list(range(1, 248))
    else:
        link = ModbusLink.rtu(args.serial, baudrate=args.baud, parity=args.parity, timeout_s=timeout_s)
        where = f"{args.serial} at {args.baud} baud"
        units = args.units or list(range(1, 248))
    from heatgate.drivers.modbus.errors import ModbusCommError

    found: list[tuple[int, str]] = []
    try:
        with Progress(
            TextColumn("scanning {task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("found {task.fields[found]}"),
            console=console,
            transient=False,
        ) as progress:
            task = progress.add_task(where, total=len(units), found=0)
            for unit in units:
                try:
                    answered = await probe_unit(link, unit, timeout_s=timeout_s)
                except ModbusCommError as exc:
                    progress.stop()
                    console.print(f"[red]cannot reach {where}: {exc}[/red]")
                    if args.host:
                        console.print(_port_hint(args, port))
                    return EXIT_FAILURE
                if answered:
                    fit = await identify(link, unit, timeout_s=max(timeout_s, 0.5), profiles=profiles)
                    found.append((unit, fit))
                    progress.update(task, found=len(found))
                progress.advance(task)
    finally:
        link.close()
    if not found:
        console.print(f"no Modbus unit answered on {where}")
        if args.host:
            console.print(_port_hint(args, port))
        else:
            console.print("tried parity and baud rate as given: try the device's others with --baud and --parity")
        return EXIT_FAILURE
    for unit, fit in found:
        console.print(f"unit {unit:>3}: answers; {fit}")
    return EXIT_OK
