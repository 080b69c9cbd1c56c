"""`make bench`: every benchmark, quickly, and one table of the key figures.

Runs each benchmark as its own process (``python -m bench.<name>`` in the checkout) with short
settings (the command of each is printed in the table), keeps its full output under ``--out``
(default: a temporary directory it names), and collects the key figures from that output: a
``BENCH_JSON {...}`` line where the benchmark prints one (bench_agent, bench_peer), otherwise its
own result lines, parsed.
A figure that cannot be found is shown as "n/a" with the reason; one failed script does not
stop the others. Takes about eight minutes on a 2-core machine.

    .venv/bin/python -m bench.run_all            # or: make bench
    .venv/bin/python -m bench.run_all --only agent,peer --agent-duration-s 600
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.peer_support.measure import machine_description

REPO = Path(__file__).resolve().parent.parent

Row = tuple[str, str, str]
"""(figure, value, target or note)"""


@dataclass(frozen=True)
class Bench:
    key: str
    module: str
    """A module of the bench package, run as ``python -m`` from the checkout."""
    args: list[str]
    timeout_s: float
    collect: Callable[[str], list[Row]]

    def command(self) -> str:
        return " ".join([".venv/bin/python", "-m", self.module, *self.args])


def _json_line(output: str) -> dict[str, Any]:
    for line in reversed(output.splitlines()):
        if line.startswith("BENCH_JSON "):
            result: dict[str, Any] = json.loads(line[len("BENCH_JSON ") :])
            return result
    raise LookupError("no BENCH_JSON line")


def _find(pattern: str, output: str) -> re.Match[str]:
    match = re.search(pattern, output, re.MULTILINE)
    if match is None:
        raise LookupError(f"no line matching {pattern!r}")
    return match


def collect_buffer(output: str) -> list[Row]:
    m = _find(r"ingest chacha20-poly1305: ([\d,]+) rec/s .* vs ([\d,]+) rec/s raw .* ratio ([\d.]+)", output)
    return [
        ("buffer ingest ratio (ChaCha20 + commit / raw sqlite-utils)", f"{m[3]} ({m[1]} vs {m[2]} rec/s)", ">= 0.5")
    ]


def collect_publish(output: str) -> list[Row]:
    cells = re.findall(r"payload≤(\d+) KiB window\s+(\d+): .*\| ratio ([\d.]+) \(runs ([\d.]+)\.\.([\d.]+)\)", output)
    if not cells:
        raise LookupError("no drain ratio lines")
    ratios = [float(c[2]) for c in cells]
    rows: list[Row] = [
        (
            "drain / raw paho QoS 1, every cell of the grid",
            f"{min(ratios):.2f} to {max(ratios):.2f}; "
            f"{'every cell >= 0.8' if min(ratios) >= 0.8 else f'{sum(r < 0.8 for r in ratios)} cell(s) < 0.8'}",
            ">= 0.8 in every cell",
        )
    ]
    for kib, window, ratio, low, high in cells:
        rows.append(
            (f"  drain / raw paho, {kib} KiB, window {window}", f"{ratio} (pairs {low}..{high})", "median of pairs")
        )
    m = _find(r"fault latency behind a (\d+)-record backlog: n=(\d+) p50 ([\d.]+) ms, p99 ([\d.]+) ms", output)
    rows.append((f"fault latency behind a {int(m[1]):,}-record backlog", f"p50 {m[3]} ms, p99 {m[4]} ms", f"n={m[2]}"))
    return rows


def collect_modbus(output: str) -> list[Row]:
    rows: list[Row] = []
    for m in re.finditer(r"^\s+(\S+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+([\d.]+)\s*$", output, re.MULTILINE):
        rows.append((f"planner: {m[1]} requests planned / fewest", f"{m[3]} / {m[4]} = {m[6]}", f"per point: {m[5]}"))
    m = _find(r"per point / planned: ([\d.]+)x", output)
    rows.append(("planner: client CPU per poll, per point / planned", f"{m[1]} x", "sim-heatpump over TCP"))
    return rows


def collect_privacy(output: str) -> list[Row]:
    m = _find(r"privacy pipeline process\(\)\s*:\s*([\d,]+) readings/s", output)
    return [("privacy pipeline rate", f"{m[1]} readings/s", ">= 100,000")]


def collect_agent(output: str) -> list[Row]:
    result = _json_line(output)
    rows: list[Row] = []
    if "home" in result:
        home = result["home"]
        rows.append(
            (
                f"whole agent, home load ({home['duration_s']:.0f} s): CPU",
                f"{home['cpu_percent']:.2f} % of a core",
                "< 2 %",
            )
        )
        rows.append(("whole agent, home load: RSS (max)", f"{home['rss_max_mib']:.1f} MiB", "<= 40 MiB"))
        if "forbidden_imported" in home:
            rows.append(
                (
                    "whole agent: sqlite-utils/rich/click/pluggy/dateutil imported",
                    ", ".join(home["forbidden_imported"]) or "none",
                    f"{len(home['imported_packages'])} top-level modules in all",
                )
            )
    if "x100" in result:
        x100 = result["x100"]
        rows.append(
            (f"whole agent, 100 x load ({x100['duration_s']:.0f} s): CPU", f"{x100['cpu_percent']:.2f} % of a core", "")
        )
        rows.append(("whole agent, 100 x load: RSS (max)", f"{x100['rss_max_mib']:.1f} MiB", ""))
        rows.append(
            (
                "whole agent, 100 x load: keeps up (queue drains every window)",
                f"{'yes' if x100['keeps_up'] else 'NO'}; polls {100 * x100['poll_rate_achieved']:.0f} % "
                f"of configured; troughs {x100['queued_records_troughs']}, "
                f"peaks {x100['queued_records_peaks']}, readings queue max "
                f"{max(x100['readings_queue_samples'], default=0)}",
                "no growing queue",
            )
        )
    return rows


def collect_pi(output: str) -> list[Row]:
    """The whole agent on one core at 25 % (bench_agent --cpu 1 --cpu-quota-pct 25)."""
    result = _json_line(output)
    rows: list[Row] = []
    for name in ("home", "x100"):
        if name not in result:
            continue
        r = result[name]
        rows.append(
            (
                f"Pi estimate (1 core at 25 %), {'home' if name == 'home' else '100 x'} load",
                f"CPU {r['cpu_percent']:.2f} %, polls {100 * r['poll_rate_achieved']:.0f} % of configured, "
                f"keeps up: {'yes' if r['keeps_up'] else 'NO'}; readings queue max "
                f"{max(r['readings_queue_samples'], default=0)}, buffer peaks {r['queued_records_peaks']}",
                r["cpu_limits"],
            )
        )
    return rows


def collect_peer(output: str) -> list[Row]:
    result = _json_line(output)
    if "heatgate" not in result:
        return [("peer comparison (ThingsBoard IoT Gateway)", "not run", result.get("verdict", "?")[:200])]
    hg, tb = result["heatgate"], result["thingsboard-gateway"]
    return [
        (
            "peer: CPU heatgate / ThingsBoard GW",
            f"{hg['cpu_percent']:.2f} / {tb['cpu_percent']:.2f} % = {result['cpu_ratio']}",
            "<= 0.05",
        ),
        (
            "peer: RSS heatgate / ThingsBoard GW",
            f"{hg['rss_max_mib']:.1f} / {tb['rss_max_mib']:.1f} MiB = {result['rss_ratio']}",
            "<= 0.6",
        ),
        (
            "peer: requests/s at the simulator",
            f"{hg['requests_per_s']} / {tb['requests_per_s']}",
            "50 registers every 1 s",
        ),
        (
            "peer: messages/s at the broker",
            f"{hg['broker_messages_per_s']} / {tb['broker_messages_per_s']}",
            f"heatgate policy: {result.get('policy', 'shipped')}",
        ),
        (
            "peer: readings/s at the broker",
            f"{hg.get('broker_readings_per_s', '?')} / {tb.get('broker_readings_per_s', '?')}",
            f"heatgate policy: {result.get('policy', 'shipped')}",
        ),
    ]


def collect_peer_raw(output: str) -> list[Row]:
    """The same comparison at equal output (heatgate publishes every reading: --policy raw)."""
    return [(f"{figure} [raw policy]", value, note) for figure, value, note in collect_peer(output)]


def benches(args: argparse.Namespace) -> list[Bench]:
    agent_runs = [
        *("--duration-s", str(args.agent_duration_s)),
        *("--x100-duration-s", str(args.x100_duration_s)),
        *("--warmup-s", "8"),
    ]
    agent_timeout_s = 120 + 2 * (args.agent_duration_s + args.x100_duration_s)
    return [
        Bench(
            "buffer",
            "bench.bench_buffer",
            ["--records", "20000", "--backlog", "20000", "--wear-seconds", "2"],
            300,
            collect_buffer,
        ),
        Bench("publish", "bench.bench_publish", [], 300, collect_publish),
        Bench("modbus", "bench.bench_modbus", ["--polls", "30"], 120, collect_modbus),
        Bench("privacy", "bench.bench_privacy", ["--readings", "100000"], 120, collect_privacy),
        Bench(
            "agent",
            "bench.bench_agent",
            [*agent_runs, "--modules", "--json"],
            agent_timeout_s,
            collect_agent,
        ),
        Bench(
            "pi",
            "bench.bench_agent",
            [*agent_runs, "--cpu", "1", "--cpu-quota-pct", "25", "--json"],
            agent_timeout_s,
            collect_pi,
        ),
        Bench(
            "peer",
            "bench.bench_peer",
            ["--duration-s", str(args.peer_duration_s), "--warmup-s", "8", "--json"],
            1200 + 2 * args.peer_duration_s,
            collect_peer,
        ),
        Bench(
            "peer-raw",
            "bench.bench_peer",
            ["--duration-s", str(args.peer_duration_s), "--warmup-s", "8", "--policy", "raw", "--json"],
            1200 + 2 * args.peer_duration_s,
            collect_peer_raw,
        ),
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated subset: buffer,publish,modbus,privacy,agent,pi,peer,peer-raw")
    parser.add_argument("--agent-duration-s", type=float, default=30.0, help="home-load window (default 30)")
    parser.add_argument("--x100-duration-s", type=float, default=30.0, help="100 x window (default 30)")
    parser.add_argument("--peer-duration-s", type=float, default=30.0, help="peer comparison window (default 30)")
    parser.add_argument("--out", type=Path, help="directory for each script's full output")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="heatgate-bench-"))
    out.mkdir(parents=True, exist_ok=True)
    chosen = set(args.only.split(",")) if args.only else None
    rows: list[tuple[str, str, str, str]] = []
    for bench in benches(args):
        if chosen is not None and bench.key not in chosen:
            continue
        print(f"running {bench.command()} ...", flush=True)
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", bench.module, *bench.args],
                cwd=REPO,
                capture_output=True,
                text=True,
                timeout=bench.timeout_s,
            )
            output = done.stdout + done.stderr
            failure = f"exit {done.returncode}" if done.returncode != 0 else ""
        except subprocess.TimeoutExpired as exc:
            output = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else exc.stdout or ""
            failure = f"timed out after {bench.timeout_s:.0f} s"
        (out / f"{bench.key}.log").write_text(output)
        print(
            f"  {time.monotonic() - started:.0f} s{', ' + failure if failure else ''}; output in "
            f"{out / (bench.key + '.log')}",
            flush=True,
        )
        try:
            for figure, value, note in bench.collect(output):
                rows.append((figure, value, note, bench.command()))
        except (LookupError, ValueError, KeyError) as exc:
            rows.append((f"{bench.key}: figures", "n/a", f"{failure or 'unparsed'}: {exc}", bench.command()))
    machine = machine_description()
    print()
    print(f"# heatgate benchmarks — {machine['date']}")
    print(
        f"machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory']} RAM, {machine['os']}, "
        f"Python {machine['python']}; load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        "(shared machine: ratios are against baselines measured in the same run)"
    )
    width_figure = max((len(r[0]) for r in rows), default=10)
    width_value = max((len(r[1]) for r in rows), default=10)
    print(f"{'figure':<{width_figure}}  {'value':<{width_value}}  target / note")
    print(f"{'-' * width_figure}  {'-' * width_value}  {'-' * 20}")
    for figure, value, note, _command in rows:
        print(f"{figure:<{width_figure}}  {value:<{width_value}}  {note}")
    print()
    print("commands:")
    for command in dict.fromkeys(r[3] for r in rows):
        print(f"  {command}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
