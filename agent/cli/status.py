"""``heatgate status``: the running agent's health, from its status socket."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from heatgate.agent.cli.common import add_config_option, load_or_report
from heatgate.agent.cli.console import error_console, output_console
from heatgate.agent.status import StatusError, query_status

DESCRIPTION = """\
Asks the running agent (over its unix socket, which only the heatgate user can open) how it
is: per source the last reading, poll rate, errors by kind and quality; per stream what is
queued, the age of the oldest record, what was published and evicted; the broker connection;
the buffer's size against its cap; key epochs; consent, objection and restriction state.

Exit status 0 when the agent answered and reports itself healthy, 1 when it answered with a
problem (a source down, the broker unreachable, an alarm) or did not answer, 2 on bad usage.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="show the running agent's health (sources, streams, broker, buffer)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument("--socket", type=Path, help="status socket (default: from the config)")
    parser.add_argument("--json", action="store_true", help="print the raw status document as JSON")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    path: Path | None = args.socket
    if path is None:
        loaded = load_or_report(args.config)
        if loaded is None:
            return 2
        path = loaded.config.status_socket_path
    try:
        document = query_status(path)
    except StatusError as exc:
        error_console().print(f"[bold red]error[/]: {exc}")
        return 1
    if args.json:
        json.dump(document, sys.stdout, indent=2, default=str)
        sys.stdout.write("\n")
    else:
        render(document, output_console())
    return 0 if document.get("healthy") else 1


def _age(ts: Any, now: float) -> str:
    if not isinstance(ts, int | float):
        return "-"
    seconds = max(0.0, now - ts)
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h ago"
    return f"{seconds / 86400:.1f} d ago"


_ERROR_COUNTERS = (
    "crc_errors",
    "parse_errors",
    "checksum_errors",
    "decode_errors",
    "timeouts",
    "naks",
    "cans",
    "retransmissions",
    "unsupported_secure",
    "port_losses",
    "garbage_bytes",
)


def _errors(health: dict[str, Any]) -> str:
    """The driver's error counters, whatever the driver: top-level ones and per device."""
    counts: dict[str, int] = {}
    for key in _ERROR_COUNTERS:
        value = health.get(key)
        if isinstance(value, int) and value:
            counts[key] = value
    for device in (health.get("devices") or {}).values():
        for kind, value in (device.get("errors") or {}).items():
            if isinstance(value, int) and value:
                counts[kind] = counts.get(kind, 0) + value
        if device.get("state") == "backing_off":
            counts["devices backing off"] = counts.get("devices backing off", 0) + 1
    if isinstance(health.get("errors"), dict):
        for kind, value in health["errors"].items():
            if isinstance(value, int) and value:
                counts[kind] = counts.get(kind, 0) + value
    return ", ".join(f"{k} {v}" for k, v in counts.items())


def _state(health: dict[str, Any]) -> str:
    """The source's state, coloured: green running, red anything else; devices failing named."""
    state = str(health.get("state", ""))
    text = f"[green]{state}[/]" if state == "running" else f"[red]{state}[/]"
    failing = sorted(
        name
        for name, device in (health.get("devices") or {}).items()
        if isinstance(device, dict) and device.get("failing_since_ts") is not None
    )
    if failing:
        text += f" [red](failing: {', '.join(failing)})[/]"
    unreadable = sorted(
        f"{name}.{entry.get('point')}"
        for name, device in (health.get("devices") or {}).items()
        if isinstance(device, dict)
        for entry in device.get("unreadable") or []
        if isinstance(entry, dict)
    )
    if unreadable:
        text += f" [red](cannot read: {', '.join(unreadable)})[/]"
    return text


def render(document: dict[str, Any], console: Console) -> None:
    now = time.time()
    healthy = document.get("healthy")
    mark = "[bold green]healthy[/]" if healthy else "[bold red]unhealthy[/]"
    console.print(
        f"heatgate {document.get('version', '?')}  gateway [bold]{document.get('gateway', '?')}[/]  {mark}  "
        f"up {document.get('uptime_s', 0):.0f} s"
    )
    for problem in document.get("problems", []):
        console.print(f"  [red]•[/] {problem}", markup=True)

    broker = document.get("broker", {})
    state = "[green]connected[/]" if broker.get("connected") else "[red]disconnected[/]"
    console.print(
        f"broker   {broker.get('url', '?')}  {state}  since {_age(broker.get('connected_since'), now)}  "
        f"published {broker.get('published', 0)}  in flight {broker.get('inflight', 0)}"
        + (f"  last error: {broker['last_error']}" if broker.get("last_error") else "")
    )
    buffer = document.get("buffer", {})
    if buffer:
        used, cap = buffer.get("file_bytes", 0), buffer.get("cap_bytes", 1) or 1
        console.print(
            f"buffer   {used / 2**20:.1f} MiB of {cap / 2**20:.0f} MiB ({100 * used / cap:.1f} %)"
            + (f"  alarms: {', '.join(buffer.get('alarms', []))}" if buffer.get("alarms") else "")
        )

    sources = Table(title="sources", title_justify="left")
    for column in ("source", "type", "state", "last reading", "readings/min", "quality", "errors"):
        sources.add_column(column)
    for name, health in document.get("sources", {}).items():
        quality = health.get("quality", {})
        quality_text = ", ".join(f"{k} {v}" for k, v in sorted(quality.items())) if quality else "-"
        sources.add_row(
            name,
            str(health.get("type", "")),
            _state(health),
            _age(health.get("last_reading_ts"), now),
            str(health.get("readings_per_min", "-")),
            quality_text,
            _errors(health) or "none",
        )
    console.print(sources)

    streams = Table(title="streams", title_justify="left")
    for column in ("stream", "queued", "oldest", "published", "evicted", "expired", "state"):
        streams.add_column(column)
    privacy = document.get("privacy", {})
    objected = set(privacy.get("objections", []))
    restricted = set(privacy.get("restrictions", []))
    stream_stats = buffer.get("streams", {})
    # A stream the customer objected to is emptied: show it anyway, with its state.
    for name in sorted(set(stream_stats) | objected | restricted):
        stats = stream_stats.get(name, {})
        flags = []
        if name in objected:
            flags.append("objected")
        if name in restricted:
            flags.append("restricted")
        streams.add_row(
            name,
            str(stats.get("queued", 0)),
            _age(stats.get("oldest_created_s"), now),
            str(stats.get("published", 0)),
            str(stats.get("evicted", 0)),
            str(stats.get("expired", 0)),
            ", ".join(flags) or "active",
        )
    console.print(streams)
    if privacy.get("consents") is not None:
        console.print(f"consents: {', '.join(privacy.get('consents', [])) or 'none recorded'}")
    epochs = buffer.get("key_epochs", {})
    if epochs:
        console.print("key epochs: " + ", ".join(f"{k} {v}" for k, v in epochs.items()))
