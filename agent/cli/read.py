"""``heatgate read``: read every source once and print each decoded value, as ``telegraf --test``.

For an installer on site: what the gateway reads from each device, with unit, quality and the
register it came from. No privacy pipeline, no buffer, no broker: nothing is stored or
published. Modbus devices are polled once each (through the same planner and decoders as the
daemon, refused blocks healed the same way, what was learned shown and not kept); other
sources run until their first readings or ``--timeout-s``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from heatgate.agent.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from heatgate.agent.cli.common import add_config_option, load_or_report
from heatgate.agent.config import Config, ModbusRtuOverTcpSource, ModbusRtuSource, ModbusTcpSource, SourceConfig
from heatgate.drivers.reading import Quality, Reading

NOTICE = "heatgate read: one read of each source; nothing is stored or published"
DESCRIPTION = """\
Reads every configured source once (or only --source, and only --device of it) and prints
every decoded value with its unit, quality and register, so that an installer sees on site
what the gateway reads. Nothing passes the privacy pipeline and nothing is stored or
published. Modbus registers a device refuses are found, shown and not remembered.

exit status: 0 if every device read gave a good value, 1 if one did not, 2 on a bad config
or an unknown source or device.
"""


@dataclass(frozen=True, slots=True)
class Row:
    reading: Reading
    register: str


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "read",
        help="read every source once and print decoded values (nothing stored or published)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="examples:\n  heatgate read --config /etc/heatgate/heatgate.toml\n"
        "  heatgate read -c heatgate.toml --source heatpump --device hp1 --json",
    )
    add_config_option(parser)
    parser.add_argument("--source", "-s", metavar="S", help="only this source")
    parser.add_argument("--device", "-d", metavar="D", help="only this device (of a Modbus source)")
    parser.add_argument("--json", action="store_true", help="one JSON object per value on standard output")
    parser.add_argument(
        "--timeout-s", type=float, default=15.0, help="wait for a non-Modbus source's first readings (default 15)"
    )
    parser.set_defaults(handler=run)


def _select(config: Config, source: str | None, device: str | None) -> list[SourceConfig] | str:
    sources = [s for s in config.sources if source is None or s.name == source]
    if not sources:
        known = ", ".join(s.name for s in config.sources) or "none"
        return f"no source {source!r} in the config (sources: {known})"
    if device is not None:
        modbus = [s for s in sources if isinstance(s, ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource)]
        sources = [s for s in modbus if any(d.name == device for d in s.devices)]
        if not sources:
            return f"no Modbus device {device!r} in the selected source(s)"
    return sources


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return EXIT_USAGE
    selected = _select(loaded.config, args.source, args.device)
    if isinstance(selected, str):
        print(f"heatgate read: {selected}", file=sys.stderr)
        return EXIT_USAGE
    print(NOTICE, file=sys.stderr if args.json else sys.stdout, flush=True)
    rows, notes, ok = asyncio.run(_read_all(selected, args.device, args.timeout_s))
    if args.json:
        for row in rows:
            r = row.reading
            record = {
                "source": r.source,
                "device": r.device,
                "point": r.point,
                "value": r.value,
                "text": r.text,
                "unit": r.unit,
                "quality": r.quality.value,
                "register": row.register,
            }
            sys.stdout.write(json.dumps(record) + "\n")
        for note in notes:
            print(note, file=sys.stderr)
    else:
        _table(rows, notes)
    return EXIT_OK if ok else EXIT_FAILURE


def _table(rows: Sequence[Row], notes: Sequence[str]) -> None:
    from rich.table import Table

    from heatgate.agent.cli.console import output_console

    console = output_console()
    table = Table(title=f"{len(rows)} value(s)", title_justify="left")
    for column in ("source", "device", "point", "value", "unit", "quality", "register"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for row in rows:
        r = row.reading
        value = "" if r.value is None else str(r.value)
        if r.text:
            value = f"{value} ({r.text})" if value else r.text
        quality = r.quality.value if r.quality is Quality.OK else f"[red]{r.quality.value}[/]"
        table.add_row(r.source, r.device, r.point, value, r.unit or "", quality, row.register)
    console.print(table)
    for note in notes:
        console.print(f"[yellow]{note}[/]")


async def _read_all(
    sources: Sequence[SourceConfig], device: str | None, timeout_s: float
) -> tuple[list[Row], list[str], bool]:
    rows: list[Row] = []
    notes: list[str] = []
    ok = True
    for source in sources:
        if isinstance(source, ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource):
            got, said, good = await _read_modbus(source, device)
        else:
            got, said, good = await _read_other(source, timeout_s)
        rows.extend(got)
        notes.extend(said)
        ok = ok and good
    return rows, notes, ok


async def _read_modbus(
    source: ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource, device: str | None
) -> tuple[list[Row], list[str], bool]:
    from heatgate.drivers.modbus.source import make_modbus_source

    runner = make_modbus_source(source)  # no state dir: what it learns is not kept
    rows: list[Row] = []
    notes: list[str] = []
    ok = True
    try:
        for name, state in runner.devices.items():
            if device is not None and name != device:
                continue
            readings = await runner.poll_device(state)
            for reading in readings:
                point = state.profile.point(reading.point)
                where = f"{point.table} {point.address}" + (f"-{point.end - 1}" if point.count > 1 else "")
                rows.append(Row(reading, f"{where} {point.type}"))
            if not any(r.quality is Quality.OK for r in readings):
                ok = False
                notes.append(f"{source.name}/{name}: no good value ({state.last_error or 'see the qualities'})")
            learned = state.facts.describe()
            if learned:
                notes.append(
                    f"{source.name}/{name}: the device refuses {', '.join(learned)} "
                    f"({state.heal_requests} extra request(s) to find out); declare them as `unreadable` "
                    "in the profile or correct the points' addresses"
                )
            if state.facts.max_registers is not None:
                notes.append(
                    f"{source.name}/{name}: reads longer than {state.facts.max_registers} registers refused; "
                    "set max_registers_per_read in the profile"
                )
    finally:
        runner.link.close()
    return rows, notes, ok


async def _read_other(source: SourceConfig, timeout_s: float) -> tuple[list[Row], list[str], bool]:
    from heatgate.agent.assembly import build_source

    got: list[Reading] = []
    first = asyncio.Event()

    async def sink(readings: Sequence[Reading]) -> None:
        got.extend(readings)
        first.set()

    driver = build_source(source).source
    task = asyncio.create_task(driver.run(sink), name=f"read:{source.name}")
    waiter = asyncio.create_task(first.wait())
    await asyncio.wait({task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
    results = await asyncio.gather(task, waiter, return_exceptions=True)
    notes: list[str] = []
    if not got:
        error = results[0]
        why = (
            f"{type(error).__name__}: {error}"
            if isinstance(error, BaseException) and not isinstance(error, asyncio.CancelledError)
            else f"no readings within {timeout_s:g} s"
        )
        notes.append(f"{source.name}: {why}")
    return [Row(r, "") for r in got], notes, any(r.quality is Quality.OK for r in got)
