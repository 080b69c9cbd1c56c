"""``heatgate privacy``: the processing register and the data-subject rights on the device."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from heatgate.agent.cli.common import add_config_option
from heatgate.agent.cli.console import error_console, output_console
from heatgate.agent.cli.local_buffer import load_local_setup, print_error, with_local_buffer

DESCRIPTION = """\
The processing register as this gateway enforces it, and the customer's rights over the data
kept on it. Every change is written to the audit log (security stream) with the actor
local-cli; the same rights exist as signed remote commands.

  report                    the register: streams, purposes, legal bases, allow-lists,
                            granularity, retention, who sees it, the promises kept, the
                            rule of each device type of the sources, how to merge
                            aggregates, with the current consent, objection and
                            restriction state (--json for machines; --markdown: the
                            register as docs/privacy.md holds it)
  export [--output FILE]    everything stored about the household, decrypted, as JSON
  erase [--stream S] --yes  crypto-shredding: rows deleted, data keys destroyed
  object STREAM [--withdraw]     stop a stream's intake and destroy its queue (or resume)
  restrict STREAM [--lift]       keep storing, publish nothing of the stream (or lift)
  consent NAME [--withdraw]      record (or withdraw) a consent, e.g. p1-15min
"""

ACTOR = "local-cli"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "privacy",
        help="the processing register and the data-subject rights (report, export, erase, ...)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    actions = parser.add_subparsers(dest="privacy_action", metavar="ACTION", parser_class=type(parser))

    report = actions.add_parser("report", help="show the register with the current state")
    add_config_option(report)
    report.add_argument("--json", action="store_true", help="print it as JSON")
    report.add_argument(
        "--markdown", action="store_true", help="print the register as Markdown (the text of docs/privacy.md)"
    )
    report.set_defaults(handler=_report)

    export = actions.add_parser("export", help="everything stored about the household, as JSON")
    add_config_option(export)
    export.add_argument("--output", "-o", type=Path, help="write to FILE (mode 0600) instead of stdout")
    export.set_defaults(handler=_export)

    erase = actions.add_parser("erase", help="erase one stream or everything (crypto-shredding)")
    add_config_option(erase)
    erase.add_argument("--stream", help="only this stream (default: every stream)")
    erase.add_argument("--yes", action="store_true", help="do it (without --yes nothing is erased)")
    erase.set_defaults(handler=_erase)

    for name, flag, flag_help in (
        ("object", "--withdraw", "withdraw the objection: intake resumes"),
        ("restrict", "--lift", "lift the restriction: publishing resumes"),
        ("consent", "--withdraw", "withdraw the consent"),
    ):
        sub = actions.add_parser(name, help=f"{name} ({flag} to undo)")
        add_config_option(sub)
        sub.add_argument("name", metavar="NAME" if name == "consent" else "STREAM")
        sub.add_argument(flag, dest="undo", action="store_true", help=flag_help)
        sub.set_defaults(handler=_change, change=name)

    def usage(_args: argparse.Namespace) -> int:
        parser.print_help(sys.stderr)
        return 2

    parser.set_defaults(handler=usage)


# ---- plumbing ---------------------------------------------------------------------------------


# ---- report -------------------------------------------------------------------------------------


def _report(args: argparse.Namespace) -> int:
    from heatgate.agent.privacy.device_types import device_type_report
    from heatgate.agent.privacy.region import generalise_region
    from heatgate.agent.privacy.register_doc import register_markdown
    from heatgate.agent.privacy.rights import register_view

    setup = load_local_setup(args)
    if setup is None:
        return 2
    if args.markdown:
        sys.stdout.write(register_markdown(setup.policy))
        return 0
    config = setup.config
    region = generalise_region(config.gateway.region, setup.policy.region)
    epoch_days = config.privacy.pseudonym_epoch_days
    document: dict[str, Any] = {}
    note = None

    async def with_state(buffer: Any, state: Any, pipeline: Any) -> int:
        document.update(register_view(setup.policy, region=region, state=state, epoch_days=epoch_days))
        stats = await buffer.stats()
        document["queued"] = {name: s.queued for name, s in stats.streams.items()}
        return 0

    if config.buffer_path.exists():
        if asyncio.run(with_local_buffer(setup, with_state)) != 0:
            note = "state unknown: the buffer could not be opened (see above)"
    else:
        note = f"state unknown: no buffer at {config.buffer_path} yet (nothing stored, no choices recorded)"
    if not document:
        document = register_view(setup.policy, region=region, state=None, epoch_days=epoch_days)
    document["policy_file"] = str(config.policy_path)
    document["gateway"] = config.gateway.id
    document["topic_prefix"] = config.mqtt.topic_prefix
    document["note"] = note
    document["device_types_of_sources"] = {
        entry.device_type: {"listed": entry.listed, "from": list(entry.producers), "rules": entry.rules}
        for entry in device_type_report(setup.policy, config.sources)
    }
    if args.json:
        json.dump(document, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        _render(document, output_console())
    return 0


def _days(seconds: float) -> str:
    days = seconds / 86400
    return f"{days:g} d" if days >= 1 else f"{seconds:g} s"


def _granularity(seconds: int) -> str:
    if seconds % 86400 == 0:
        return f"{seconds // 86400} d"
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"


def _render(document: dict[str, Any], console: Console) -> None:
    console.print(f"[bold]Processing register[/] of gateway [bold]{document['gateway']}[/] ({document['policy_file']})")
    console.print(f"controller: {document.get('controller') or '-'}")
    console.print(
        f"region sent to analytics: [bold]{document['region_sent']}[/] (never the postcode or address); "
        f"pseudonym keys rotate every {document['pseudonym_epoch_days']} days"
    )
    if document.get("note"):
        console.print(f"[yellow]{document['note']}[/]")
    prefix, gateway = document["topic_prefix"], document["gateway"]
    queued = document.get("queued", {})
    for name, stream in document["streams"].items():
        takes = "; ".join(f"{k}: {', '.join(stream['aggregation'][k])}" for k in stream["kinds"]) or "agent events"
        if stream["exclude_device_types"]:
            takes += f" (not from {', '.join(stream['exclude_device_types'])})"
        granularity = _granularity(stream["time_granularity_s"])
        for rule in stream["windows"]:
            granularity += f"; {', '.join(rule['device_types'])}: {_granularity(rule['window_s'])}"
            if rule.get("consent"):
                granularity += f", {_granularity(rule['consent_window_s'])} with consent {rule['consent']}"
        topic = f"{prefix}/{gateway}/" if stream["carries_gateway_id"] else f"{prefix}/"
        topic += stream["route"].replace("{kind}", "{fault,status}")
        if not stream["carries_gateway_id"]:
            topic += "  (no gateway id)"
        basis = stream["legal_basis"] + ("; objectable" if stream["objectable"] else "; not objectable")
        if not stream["restrictable"]:
            basis += "; not restrictable"
        if stream.get("needs_consent"):
            basis += f"; needs consent {stream['needs_consent']}"
        state = stream.get("state")
        if state is None:
            state_text = "[dim]state unknown[/]"
        else:
            flags = [
                "[red]OBJECTED: no intake[/]"
                if state["objected"]
                else ("[green]intake on[/]" if state["intake"] else "[yellow]intake off (no consent)[/]")
            ]
            if state["restricted"]:
                flags.append("[yellow]RESTRICTED: stored, not published[/]")
            for pattern, window_s in state["effective_windows_s"].items():
                flags.append(f"{pattern} now per {_granularity(window_s)}")
            flags.append(f"{queued.get(name, 0)} queued")
            state_text = ", ".join(flags)
        console.print()
        console.print(f"[bold cyan]{name}[/]  lane {stream['priority']}  {state_text}")
        grid = Table.grid(padding=(0, 2))
        grid.add_column(style="dim", no_wrap=True)
        grid.add_column(overflow="fold")
        grid.add_row("purpose", stream["purpose"])
        grid.add_row("legal basis", basis)
        grid.add_row("takes", takes)
        grid.add_row("fields sent", ", ".join(stream["fields"]))
        grid.add_row("granularity", granularity)
        grid.add_row("retention", f"{_days(stream['retention_s'])} on the device")
        grid.add_row("who sees it", stream.get("recipients") or "-")
        grid.add_row("topic", topic)
        promises = document.get("promises", {})
        grid.add_row("promises kept", "; ".join(f"{p}: {promises.get(p, '?')}" for p in stream.get("promises", [])))
        console.print(grid, markup=False)
    console.print()
    choices = document.get("choices")
    consents = Table(title="consents")
    for column in ("name", "stream", "what it allows", "recorded"):
        consents.add_column(column, overflow="fold")
    given = (choices or {}).get("detail", {}).get("consents", {})
    for name, consent in document["consents"].items():
        recorded = "unknown" if choices is None else (f"yes ({given[name]['actor']})" if name in given else "no")
        consents.add_row(name, consent["stream"], consent["description"], recorded)
    console.print(consents)
    _render_device_types(document, console)
    from heatgate.agent.privacy.register_doc import MERGING

    console.print()
    console.print("[bold]Reading and merging aggregates[/]")
    console.print(MERGING, markup=False)
    console.print()
    console.print(f"installer-local data: {document['installer_local']['purpose']}: never published")


def _render_device_types(document: dict[str, Any], console: Console) -> None:
    from heatgate.agent.privacy.policy import UNLISTED

    table = Table(title="device types of the configured sources and their rules", title_justify="left")
    for column in ("device type", "from", "rules"):
        table.add_column(column, overflow="fold")
    for device_type, entry in document["device_types_of_sources"].items():
        name = device_type if entry["listed"] else f"{device_type} ({UNLISTED}: the most restrictive rules)"
        rules = "\n".join(f"{stream}: {rule}" for stream, rule in entry["rules"].items())
        table.add_row(name, ", ".join(entry["from"]), rules)
    console.print(table)


# ---- export / erase / changes -----------------------------------------------------------------


def _export(args: argparse.Namespace) -> int:
    from heatgate.agent.privacy.rights import dumps, export_household

    setup = load_local_setup(args)
    if setup is None:
        return 2

    async def work(buffer: Any, state: Any, pipeline: Any) -> int:
        document = await export_household(buffer, state, pipeline)
        await buffer.put(
            [pipeline.audit("privacy.export", ACTOR, "done", details={"records": len(document["records"])})]
        )
        text = dumps(document) + "\n"
        if args.output:
            import os

            fd = os.open(args.output, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
            count = len(document["records"])
            error_console().print(f"exported {count} record(s) to {args.output}")
        else:
            sys.stdout.write(text)
        return 0

    return asyncio.run(with_local_buffer(setup, work))


def _erase(args: argparse.Namespace) -> int:
    from heatgate.agent.privacy.rights import RightsRefused, apply_erase

    setup = load_local_setup(args)
    if setup is None:
        return 2
    what = f"the {args.stream} stream" if args.stream else "every stream"
    if not args.yes:
        print_error(f"this erases {what} on this gateway for good; run again with --yes")
        return 2

    async def work(buffer: Any, state: Any, pipeline: Any) -> int:
        try:
            records = await apply_erase(buffer, state, pipeline, args.stream, ACTOR)
        except RightsRefused as exc:
            print_error(exc.reason)
            return 2
        removed = json.loads(records[0].payload)["details"]["removed"]
        output_console().print(f"erased {what}: {removed} record(s) deleted, their keys destroyed")
        return 0

    return asyncio.run(with_local_buffer(setup, work))


def _change(args: argparse.Namespace) -> int:
    from heatgate.agent.privacy import rights

    setup = load_local_setup(args)
    if setup is None:
        return 2
    functions = {
        ("object", False): rights.apply_objection,
        ("object", True): rights.apply_withdraw_objection,
        ("restrict", False): rights.apply_restriction,
        ("restrict", True): rights.apply_lift,
        ("consent", False): rights.apply_consent,
        ("consent", True): rights.apply_withdraw_consent,
    }
    function = functions[(args.change, args.undo)]

    async def work(buffer: Any, state: Any, pipeline: Any) -> int:
        try:
            records = await function(buffer, state, pipeline, args.name, ACTOR)
        except rights.RightsRefused as exc:
            print_error(f"refused: {exc.reason} (audited)")
            return 2
        body = json.loads(records[0].payload)
        details = body["details"]
        verb = body["event"].removeprefix("privacy.")
        changed = "" if details.get("changed") else " (already so; audited)"
        extra = f"; {details['purged']} queued record(s) destroyed" if "purged" in details else ""
        output_console().print(f"{verb} {args.name}: done{changed}{extra}")
        return 0

    return asyncio.run(with_local_buffer(setup, work))
