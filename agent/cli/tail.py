"""``heatgate tail``: the backend's view. Subscribe, validate against the schemas, de-duplicate, show.

Every message is shown: a message that fails its schema is shown as ``INVALID`` with the reason,
never dropped. Records already seen (a re-send after a reconnect, same id) are counted as
duplicates and not shown again.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

import msgspec
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from heatgate.agent.cli.common import add_config_option, load_or_report
from heatgate.agent.cli.console import error_console, output_console
from heatgate.agent.config import MqttConfig
from heatgate.agent.publish.client import Incoming, MqttClient, TlsFiles
from heatgate.agent.publish.decode import Decoded, Deduplicator, decode_message
from heatgate.agent.publish.errors import ConnectError

ROWS_SHOWN = 25


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "tail",
        help="backend side: subscribe, validate each message against its schema, de-duplicate, show",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument("--gateway", metavar="ID", help="one gateway's topics (default: the config's gateway)")
    scope.add_argument("--fleet", action="store_true", help="every gateway's topics and analytics")
    parser.add_argument("--json", action="store_true", help="JSON lines instead of a live table")
    parser.add_argument("--count", type=int, metavar="N", help="exit after N messages")
    parser.add_argument("--duration-s", type=float, metavar="S", help="exit after S seconds")
    parser.add_argument("--url", help="broker URL (default: the config's mqtt.url)")
    parser.add_argument("--ca", type=Path, help="CA file (default: mqtt.ca_file)")
    parser.add_argument("--cert", type=Path, help="the backend's client certificate (mutual TLS)")
    parser.add_argument("--key", type=Path, help="its private key")
    parser.set_defaults(handler=run)


def topics_for(prefix: str, gateway: str | None) -> list[str]:
    """The subscriptions: one gateway's tree, or the fleet (every gateway and analytics)."""
    if gateway is None:
        return [f"{prefix}/+/#"]  # also matches <prefix>/analytics/<device-type>
    return [f"{prefix}/{gateway}/#"]


def as_json(decoded: Decoded, fresh: list[bool]) -> dict[str, Any]:
    """One JSON line: the topic, whether it is valid (and why not), and its records."""
    line: dict[str, Any] = {"topic": decoded.topic, "kind": decoded.kind, "valid": decoded.valid}
    if decoded.error:
        line["error"] = decoded.error
    if decoded.gateway:
        line["gateway"] = decoded.gateway
    if decoded.stream:
        line["stream"] = decoded.stream
    if decoded.schema:
        line["schema"] = decoded.schema
    if decoded.kind == "state" and decoded.message is not None:
        line["state"] = msgspec.to_builtins(decoded.message)
    if decoded.records:
        line["records"] = [{"id": r.id, "body": r.body} for r, f in zip(decoded.records, fresh, strict=True) if f]
        line["duplicates"] = fresh.count(False)
    return line


class _View:
    def __init__(self, console: Console) -> None:
        self.rows: deque[tuple[str, str, str, str, str]] = deque(maxlen=ROWS_SHOWN)
        self.console = console
        self.messages = self.invalid = self.records = self.duplicates = 0

    def add(self, decoded: Decoded, fresh: list[bool]) -> None:
        self.messages += 1
        self.records += fresh.count(True)
        self.duplicates += fresh.count(False)
        if not decoded.valid:
            self.invalid += 1
            status = f"[bold red]INVALID[/] {escape(decoded.error or '')}"
        elif decoded.kind == "state" and decoded.message is not None:
            state = decoded.message.state
            status = f"[green]{state}[/]" if state == "online" else f"[yellow]{state}[/]"
        elif decoded.records:
            status = "ok" + (f", {fresh.count(False)} duplicate(s)" if False in fresh else "")
        else:
            status = decoded.kind
        summary = ""
        shown = [r for r, f in zip(decoded.records, fresh, strict=True) if f]
        if shown:
            body = shown[-1].body
            summary = " ".join(f"{k}={body[k]}" for k in ("type", "point", "value", "code", "event") if k in body)
        # Topic, errors (which quote field names) and bodies come off the wire: never markup.
        self.rows.append(
            (time.strftime("%H:%M:%S"), escape(decoded.topic), str(len(decoded.records)), status, escape(summary))
        )

    def table(self) -> Table:
        table = Table(
            title=f"{self.messages} message(s), {self.records} record(s), "
            f"{self.duplicates} duplicate(s), {self.invalid} invalid",
            expand=False,
        )
        for column in ("time", "topic", "records", "status", "last record"):
            table.add_column(column, overflow="fold")
        for row in self.rows:
            table.add_row(*row)
        return table


async def tail(
    config: MqttConfig,
    *,
    topics: list[str],
    prefix: str,
    tls_files: TlsFiles,
    json_lines: bool,
    count: int | None,
    duration_s: float | None,
    console: Console,
) -> int:
    queue: asyncio.Queue[Incoming] = asyncio.Queue()
    client = MqttClient(
        config,
        client_id=f"heatgate-tail-{uuid.uuid4().hex[:8]}",
        clean_start=True,
        tls_files=tls_files,
        on_message=queue.put_nowait,
        on_lost=lambda reason: queue.put_nowait(Incoming("", b"", 0, False, {"lost": reason})),
    )
    try:
        await client.connect()
    except ConnectError as exc:
        console.print(f"[bold red]error[/]: {exc}", markup=True)
        return 1
    dedup = Deduplicator()
    view = _View(console)
    seen = 0
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    live = Live(view.table(), console=console, refresh_per_second=4) if not json_lines and console.is_terminal else None
    try:
        client.subscribe(topics)
        with live if live is not None else contextlib.nullcontext():
            while count is None or seen < count:
                timeout = None if deadline is None else deadline - time.monotonic()
                if timeout is not None and timeout <= 0:
                    break
                try:
                    incoming = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                if "lost" in incoming.properties:
                    console.print(f"[bold red]error[/]: connection lost: {incoming.properties['lost']}")
                    return 1
                seen += 1
                decoded = decode_message(incoming.topic, incoming.payload, prefix=prefix)
                fresh = [dedup.first_time(r.id) for r in decoded.records]
                if json_lines:
                    sys.stdout.write(json.dumps(as_json(decoded, fresh), ensure_ascii=False) + "\n")
                    sys.stdout.flush()
                else:
                    view.add(decoded, fresh)
                    if live is not None:
                        live.update(view.table())
                    else:
                        console.print(*view.rows[-1][:4], view.rows[-1][4], sep="  ")
    finally:
        await client.disconnect()
    return 0


def run(args: argparse.Namespace) -> int:
    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    mqtt = loaded.config.mqtt
    if args.url:
        try:
            mqtt = msgspec.structs.replace(mqtt, url=args.url)
            mqtt.__post_init__()
        except ValueError as exc:
            print(f"heatgate tail: --url: {exc}", file=sys.stderr)
            return 2
    gateway = None if args.fleet else (args.gateway or loaded.config.gateway.id)
    tls_files = TlsFiles(
        ca_file=str(args.ca) if args.ca else None,
        cert_file=str(args.cert) if args.cert else None,
        key_file=str(args.key) if args.key else None,
    )
    if (args.cert is None) != (args.key is None):
        print("heatgate tail: give both --cert and --key", file=sys.stderr)
        return 2
    console = (error_console if args.json else output_console)(soft_wrap=True)
    try:
        return asyncio.run(
            tail(
                mqtt,
                topics=topics_for(mqtt.topic_prefix, gateway),
                prefix=mqtt.topic_prefix,
                tls_files=tls_files,
                json_lines=args.json,
                count=args.count,
                duration_s=args.duration_s,
                console=console,
            )
        )
    except KeyboardInterrupt:
        return 0
