"""Resident memory of what `heatgate run` imports, step by step in the daemon's order, against a
baseline tree measured in the same run (issue 20: the daemon's cryptography).

    .venv/bin/python -m bench.daemon_rss                       # this tree only
    git archive aa4911a | tar -x -C /tmp/heatgate-aa4911a      # e.g. the tree before libsodium
    .venv/bin/python -m bench.daemon_rss --baseline-tree /tmp/heatgate-aa4911a --runs 5

Each run is a fresh interpreter started in the tree (so ``heatgate`` is that tree's), rich
blocked as `heatgate run` does, which imports in this order and prints VmRSS after each step:
asyncio, ssl, sqlite3, msgspec, structlog; the daemon's modules (cli.run, daemon, assembly,
command wiring, buffer adapter, publisher); a Modbus source (pymodbus); a P1 source
(dsmr-parser); then the buffer and a pinned command key in use (open, put, take, close; load an
Ed25519 public key file). Runs of the two trees alternate; the table gives the median of each
step. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

PROBE = r"""
import sys, json, time
sys.modules['rich'] = None  # as `heatgate run` does (agent/cli/__init__.py)

def rss_kib():
    with open('/proc/self/status') as handle:
        for line in handle:
            if line.startswith('VmRSS:'):
                return int(line.split()[1])

steps = [('interpreter', rss_kib())]
def step(name):
    steps.append((name, rss_kib()))

import asyncio; step('asyncio')
import ssl; step('ssl')
import sqlite3; step('sqlite3')
import msgspec; step('msgspec')
import structlog; step('structlog')
import heatgate.agent.cli.run, heatgate.agent.daemon, heatgate.agent.assembly, heatgate.agent.command_wiring
import heatgate.buffer.adapter, heatgate.agent.publish.publisher
step('heatgate run modules')
import heatgate.drivers.modbus.source; step('modbus source')
import heatgate.drivers.p1.source; step('p1 source')

import base64, os, pathlib, tempfile
from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.api import NewRecord
from heatgate.agent.commands.keys import load_ed25519_public

async def use(directory):
    buffer = await open_buffer(directory / 'buffer.db', os.urandom(32), cap_bytes=1 << 24,
                               retention_s={'telemetry': 86400.0})
    record = NewRecord(id='01' + '0' * 24, stream='telemetry', route='telemetry', priority=5,
                       created_s=time.time(), payload=b'{"flow_c":35.5}')
    await buffer.put([record])
    await buffer.take(10)
    await buffer.close()

with tempfile.TemporaryDirectory() as tmp:
    directory = pathlib.Path(tmp)
    asyncio.run(use(directory))
    der = bytes.fromhex('302a300506032b6570032100') + bytes(range(32))
    pem = b'-----BEGIN PUBLIC KEY-----\n' + base64.b64encode(der) + b'\n-----END PUBLIC KEY-----\n'
    (directory / 'command.pub').write_bytes(pem)
    load_ed25519_public(directory / 'command.pub')
step('buffer + pinned key in use')
loaded = [name for name in ('cryptography', 'nacl', 'dlms_cosem') if sys.modules.get(name) is not None]
print(json.dumps({'steps': steps, 'loaded': loaded}))
"""


def probe(tree: Path) -> dict[str, object]:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=tree, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        raise SystemExit(f"probe in {tree} failed:\n{result.stderr}")
    document: dict[str, object] = json.loads(result.stdout.splitlines()[-1])
    return document


def medians(runs: list[dict[str, object]]) -> list[tuple[str, float]]:
    names = [name for name, _ in runs[0]["steps"]]  # type: ignore[attr-defined]
    table = []
    for index, name in enumerate(names):
        values = [run["steps"][index][1] for run in runs]  # type: ignore[index]
        table.append((name, statistics.median(values) / 1024))
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--baseline-tree", type=Path, help="a heatgate source tree to compare with")
    args = parser.parse_args()
    trees = {"this tree": REPO} | ({"baseline": args.baseline_tree} if args.baseline_tree else {})
    runs: dict[str, list[dict[str, object]]] = {label: [] for label in trees}
    for _ in range(args.runs):
        for label, tree in trees.items():
            runs[label].append(probe(tree))
    with open("/proc/loadavg") as handle:
        print(f"load average {handle.read().split()[0]}, {args.runs} run(s) per tree, medians (MiB)")
    tables = {label: medians(found) for label, found in runs.items()}
    labels = list(trees)
    print(f"{'step':28}" + "".join(f"{label:>12}{'+step':>8}" for label in labels))
    previous = dict.fromkeys(labels, 0.0)
    for index, (name, _) in enumerate(tables[labels[0]]):
        row = f"{name:28}"
        for label in labels:
            value = tables[label][index][1]
            row += f"{value:12.1f}{value - previous[label] if index else 0.0:+8.1f}"
            previous[label] = value
        print(row)
    for label in labels:
        print(f"{label}: imported {', '.join(runs[label][0]['loaded']) or 'neither'}")  # type: ignore[arg-type]
    if args.baseline_tree:
        after, before = tables["this tree"][-1][1], tables["baseline"][-1][1]
        print(f"total: {after:.1f} vs {before:.1f} MiB, ratio {after / before:.3f} ({after - before:+.1f} MiB)")


if __name__ == "__main__":
    main()
