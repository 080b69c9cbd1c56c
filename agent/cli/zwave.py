"""``heatgate zwave``: include, exclude and list Z-Wave devices through the Z-Wave JS server."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from heatgate.agent.cli.common import add_config_option
from heatgate.agent.cli.console import error_console, output_console
from heatgate.agent.cli.local_buffer import load_local_setup, with_local_buffer
from heatgate.drivers.zwavejs.settings import ZwaveJsSource

DESCRIPTION = """\
Add, remove and list the devices of the Z-Wave network run by the Z-Wave JS server
(heatgate-zwave.service) that the config's `zwave-js` source talks to. Every inclusion,
SmartStart provisioning and exclusion is written to the audit log (actor local-cli), without
the device's DSK or the network's home id.

  nodes                      id, name (from config), security class, status, last seen
  include --s2-dsk DSK       S2 inclusion: put the device in inclusion mode, the DSK (or its
                             first five digits, the PIN) from its label confirms it is the one
  include --qr QR            SmartStart: the QR code's entry goes on the provisioning list;
                             the device joins securely by itself once powered within range
  include                    classic inclusion without a PIN: S2 Authenticated/Access Control
                             cannot be granted (a warning says so)
  exclude                    put the device in exclusion mode within --timeout-s
"""

ACTOR = "local-cli"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "zwave",
        help="Z-Wave inclusion (S2, SmartStart), exclusion and the node list",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="zwave_action", metavar="ACTION", parser_class=type(parser))

    nodes = actions.add_parser("nodes", help="the network's nodes")
    _common(nodes)
    nodes.add_argument("--json", action="store_true", help="print them as JSON")
    nodes.set_defaults(handler=_nodes)

    include = actions.add_parser("include", help="add a device (S2 with its DSK, or SmartStart with its QR code)")
    _common(include)
    how = include.add_mutually_exclusive_group()
    how.add_argument("--s2-dsk", metavar="DSK", help="the device's DSK (40 digits) or PIN (its first 5 digits)")
    how.add_argument("--qr", metavar="QR", help="the SmartStart QR code's text (90...)")
    include.add_argument("--timeout-s", type=float, default=120.0, help="give up after this long (default 120)")
    include.set_defaults(handler=_include)

    exclude = actions.add_parser("exclude", help="remove a device")
    _common(exclude)
    exclude.add_argument("--timeout-s", type=float, default=120.0, help="give up after this long (default 120)")
    exclude.set_defaults(handler=_exclude)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=usage)


def _common(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--source", metavar="NAME", help="the zwave-js source (default: the only one)")


def _err(message: str) -> None:
    error_console().print(f"[bold red]error[/]: {message}")


def _source(setup: Any, name: str | None) -> ZwaveJsSource | None:
    sources = [s for s in setup.config.sources if isinstance(s, ZwaveJsSource)]
    if name is not None:
        sources = [s for s in sources if s.name == name]
    if len(sources) != 1:
        found = ", ".join(s.name for s in sources) or "none"
        _err(f"need exactly one `zwave-js` source{f' named {name}' if name else ''} in the config (found: {found})")
        return None
    return sources[0]


def _audit(setup: Any, event: str, outcome: str, *, reason: str | None, details: dict[str, Any]) -> int:
    async def work(buffer: Any, _state: Any, pipeline: Any) -> int:
        await buffer.put([pipeline.audit(event, ACTOR, outcome, reason=reason, details=details)])
        return 0

    return asyncio.run(with_local_buffer(setup, work))


def _nodes(args: argparse.Namespace) -> int:
    from heatgate.drivers.zwavejs.client import ZwaveJsClient, ZwaveJsError
    from heatgate.drivers.zwavejs.messages import NodeStatus, SecurityClass

    setup = load_local_setup(args)
    source = _source(setup, args.source) if setup else None
    if setup is None or source is None:
        return 2

    async def fetch() -> Any:
        async with ZwaveJsClient.connect(source.url, request_timeout_s=source.request_timeout_s) as client:
            return await client.start_listening()

    try:
        state = asyncio.run(fetch())
    except ZwaveJsError as exc:
        _err(f"the Z-Wave JS server at {source.url}: {exc} (is heatgate-zwave.service running?)")
        return 1
    names = {node.node_id: node.name for node in source.nodes}
    rows = [
        {
            "node_id": node.nodeId,
            "name": "controller" if node.nodeId == state.controller.ownNodeId else names.get(node.nodeId),
            "security": SecurityClass.NAMES.get(node.highestSecurityClass, None)
            if node.highestSecurityClass is not None
            else None,
            "status": NodeStatus.NAMES.get(node.status, str(node.status)),
            "ready": node.ready,
            "last_seen": node.statistics.lastSeen if node.statistics else None,
        }
        for node in state.nodes
    ]
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
        return 0
    from rich.table import Table

    table = Table("id", "name", "security", "status", "ready", "last seen")
    for row in rows:
        table.add_row(
            str(row["node_id"]),
            row["name"] or "-",
            row["security"] or "-",
            row["status"],
            "yes" if row["ready"] else "no",
            row["last_seen"] or "-",
        )
    output_console().print(table)
    return 0


def _include(args: argparse.Namespace) -> int:
    from heatgate.drivers.zwavejs.client import ZwaveJsClient, ZwaveJsError
    from heatgate.drivers.zwavejs.inclusion import (
        EventInbox,
        Outcome,
        include,
        normalise_dsk,
        provision_smartstart,
        provisioning_entries,
    )

    setup = load_local_setup(args)
    source = _source(setup, args.source) if setup else None
    if setup is None or source is None:
        return 2
    dsk: str | None = None
    if args.s2_dsk is not None:
        try:
            dsk = normalise_dsk(args.s2_dsk)
        except ValueError as exc:
            _err(f"--s2-dsk: {exc}")
            return 2

    async def run() -> Outcome | int:
        inbox = EventInbox()
        async with ZwaveJsClient.connect(source.url, on_event=inbox, request_timeout_s=source.request_timeout_s) as c:
            if args.qr is not None:
                await provision_smartstart(c, args.qr)
                return len(await provisioning_entries(c))
            await c.start_listening()
            output_console().print(f"put the device in inclusion mode now (waiting up to {args.timeout_s:g} s)")
            return await include(c, inbox, dsk=dsk, timeout_s=args.timeout_s)

    strategy = "smartstart" if args.qr is not None else ("s2-dsk" if dsk is not None else "s2-no-pin")
    event = "zwave.provision" if args.qr is not None else "zwave.include"
    try:
        result = asyncio.run(run())
    except ZwaveJsError as exc:
        _audit(setup, event, "failed", reason=str(exc), details={"strategy": strategy, "source": source.name})
        _err(f"{exc} ({source.url})")
        return 1
    if isinstance(result, int):
        _audit(setup, event, "done", reason=None, details={"strategy": strategy, "entries": result})
        output_console().print(f"SmartStart entry added ({result} on the list): power the device within range")
        return 0
    details: dict[str, Any] = {
        "strategy": strategy,
        "node_id": result.node_id,
        "security_class": result.security_class,
        "low_security": result.low_security,
    }
    _audit(setup, event, "done", reason=result.low_security_reason, details=details)
    output_console().print(f"included node {result.node_id} with security {result.security_class or 'unknown'}")
    if result.low_security or result.security_class in (None, "none", "S0_Legacy"):
        error_console().print(
            f"[bold yellow]warning[/]: node {result.node_id} was included with lower security than it supports"
            f"{f' ({result.low_security_reason})' if result.low_security_reason else ''}; exclude it and include it"
            " again with --s2-dsk from its label"
        )
    return 0


def _exclude(args: argparse.Namespace) -> int:
    from heatgate.drivers.zwavejs.client import ZwaveJsClient, ZwaveJsError
    from heatgate.drivers.zwavejs.inclusion import EventInbox, exclude

    setup = load_local_setup(args)
    source = _source(setup, args.source) if setup else None
    if setup is None or source is None:
        return 2

    async def run() -> int:
        inbox = EventInbox()
        async with ZwaveJsClient.connect(source.url, on_event=inbox, request_timeout_s=source.request_timeout_s) as c:
            await c.start_listening()
            output_console().print(f"put the device in exclusion mode now (waiting up to {args.timeout_s:g} s)")
            return await exclude(c, inbox, timeout_s=args.timeout_s)

    try:
        node_id = asyncio.run(run())
    except ZwaveJsError as exc:
        _audit(setup, "zwave.exclude", "failed", reason=str(exc), details={"source": source.name})
        _err(f"{exc} ({source.url})")
        return 1
    _audit(setup, "zwave.exclude", "done", reason=None, details={"node_id": node_id, "source": source.name})
    output_console().print(f"excluded node {node_id}")
    return 0
