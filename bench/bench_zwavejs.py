"""RSS and CPU of the Z-Wave JS server and of heatgate's zwave-js source at home load.

Ten sensor nodes (five S2, five unencrypted) on Z-Wave JS's mock controller, each reporting a
temperature every ``--interval-s``; the server (node) and a Python process running only the
``zwave-js`` source are sampled from /proc for ``--duration-s`` after the interview.

    .venv/bin/python -m bench.bench_zwavejs --duration-s 60 --interval-s 3
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

from heatgate.agent.devtools.zwavejs_mock import MockNetwork, node_missing_reason

CLK_TCK = os.sysconf("SC_CLK_TCK")


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def _nodes(count: int) -> list[dict[str, object]]:
    nodes: list[dict[str, object]] = []
    for index in range(count):
        secure = index % 2 == 0
        ccs: dict[str, object] = {
            "Multilevel Sensor": {"version": 11, "sensors": {"1": {"supportedScales": [0]}}},
            "Battery": {},
        }
        caps: dict[str, object] = {"commandClasses": ccs}
        if secure:
            ccs["Security 2"] = {}
            caps["securityClasses"] = ["S2_Authenticated"]
        nodes.append({"id": 2 + index, "capabilities": caps})
    return nodes


SOURCE_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from heatgate.drivers.zwavejs.settings import ZwaveJsSource
    from heatgate.drivers.zwavejs.source import ZwaveJsRunner
    count = 0
    async def sink(readings):
        global count
        count += len(readings)
    async def main():
        runner = ZwaveJsRunner(ZwaveJsSource(name="zw", url=sys.argv[1]))
        task = asyncio.create_task(runner.run(sink))
        await asyncio.sleep(float(sys.argv[2]))
        task.cancel()
        print("READINGS", count, flush=True)
    asyncio.run(main())
    """
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--nodes", type=int, default=10)
    parser.add_argument("--duration-s", type=float, default=60.0)
    parser.add_argument("--interval-s", type=float, default=3.0)
    args = parser.parse_args()
    missing = node_missing_reason()
    if missing:
        print(f"skipped: {missing}")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        net = MockNetwork(Path(tmp), _nodes(args.nodes))
        net.start()
        try:
            time.sleep(8.0)  # let the interviews finish
            server = net._server
            assert server is not None
            source = subprocess.Popen(
                [sys.executable, "-c", SOURCE_SCRIPT, net.url, str(args.duration_s + 2)],
                stdout=subprocess.PIPE,
                text=True,
            )
            time.sleep(2.0)
            cpu0 = {"server": _cpu_s(server.pid), "source": _cpu_s(source.pid)}
            rss_max = {"server": 0.0, "source": 0.0}
            started = time.monotonic()
            sent = 0
            while time.monotonic() - started < args.duration_s:
                for index in range(args.nodes):
                    value = round(18 + index * 0.1 + sent % 7, 1)
                    net.inject(op="sensor", node=2 + index, type=1, scale=0, value=value)
                    sent += 1
                for name, pid in (("server", server.pid), ("source", source.pid)):
                    rss_max[name] = max(rss_max[name], _rss_mib(pid))
                time.sleep(max(0.0, args.interval_s - 0.05 * args.nodes))
            elapsed = time.monotonic() - started
            cpu = {"server": _cpu_s(server.pid) - cpu0["server"], "source": _cpu_s(source.pid) - cpu0["source"]}
            out, _ = source.communicate(timeout=30)
            print(f"nodes {args.nodes}, reports sent {sent} in {elapsed:.0f} s ({sent / elapsed:.1f}/s)")
            for name in ("server", "source"):
                print(f"{name}: RSS max {rss_max[name]:.0f} MiB, CPU {100 * cpu[name] / elapsed:.2f} % of one core")
            print(out.strip(), "(includes the snapshot at connect; reports after the source stopped are not counted)")
        finally:
            net.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
