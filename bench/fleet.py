"""Fleet bench: N simulated gateways (real buffer, privacy pipeline, publisher) against a 3-node
NATS cluster (JetStream R3, MQTT 3.1.1 listener) or a single Mosquitto, with a backend that
consumes through a durable JetStream consumer shared by workers (or an MQTT 5 shared
subscription on Mosquitto), validates and de-duplicates by record id.

    .venv/bin/python -m bench.fleet                                   # quick: 30 gateways, 40 s
    .venv/bin/python -m bench.fleet --gateways 1000 --duration-s 120 --broker both

Faults (NATS, ``--faults all``): at 25 % of the run one node is killed (SIGKILL) and restarted
``--down-s`` later; at 55 % the whole cluster is stopped and started again. The gateways of a
node reconnect to that node (heatgate has one broker URL; in production a DNS name or load
balancer in front of the cluster gives a live node), with capped exponential backoff and full
jitter. After the run every gateway stops its source, drains its buffer and stops; the bench
then checks that every record produced was consumed exactly once after de-duplication.

Bounded: stops by itself after ``--duration-s`` plus the drain; everything lives in a temporary
directory that is removed at the end (``--keep`` keeps it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time
import tomllib
from collections import Counter
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.fleet_support.backend import BackendStats, JetStreamBackend
from bench.fleet_support.gateways import GatewayParams
from bench.fleet_support.host import host_main
from bench.fleet_support.mqtt_backend import SharedSubscriptionBackend
from heatgate.agent.devtools.demo import demo_policy
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.nats import NatsCluster


@dataclass
class Timeline:
    start_s: float = 0.0
    node_killed_s: float | None = None
    node_back_s: float | None = None
    cluster_down_s: float | None = None
    cluster_up_s: float | None = None
    stop_s: float = 0.0


def proc_cpu_s(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


def proc_rss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Fleet:
    """The gateway-host processes of one run."""

    def __init__(self, root: Path, urls: list[str], args: argparse.Namespace) -> None:
        params = GatewayParams(
            points=args.points,
            tick_s=args.tick_s,
            reconnect_min_s=args.reconnect_min_s,
            reconnect_max_s=args.reconnect_max_s,
        )
        policy = tomllib.loads(demo_policy())
        specs = [(f"gw-{i:05d}", str(root / f"gw-{i:05d}"), urls[i % len(urls)]) for i in range(args.gateways)]
        context = multiprocessing.get_context("spawn")
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.pipes: list[Connection] = []
        for h in range(args.hosts):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=host_main,
                name=f"fleet-host-{h}",
                args=(theirs, specs[h :: args.hosts], asdict(params), policy, args.drain_timeout_s),
            )
            process.start()
            theirs.close()
            self.processes.append(process)
            self.pipes.append(ours)

    async def ready(self) -> list[dict[str, Any]]:
        return [await asyncio.to_thread(_expect, pipe, "ready") for pipe in self.pipes]

    async def stop(self) -> list[dict[str, Any]]:
        for pipe in self.pipes:
            pipe.send("stop")
        reports = [await asyncio.to_thread(_expect, pipe, "done") for pipe in self.pipes]
        for process in self.processes:
            await asyncio.to_thread(process.join, 30)
        return reports

    def kill(self) -> None:
        for process in self.processes:
            if process.is_alive():
                process.kill()
            process.join()


def _expect(pipe: Connection, kind: str) -> dict[str, Any]:
    message = pipe.recv()
    if message[0] != kind:
        raise RuntimeError(f"host sent {message[0]!r}, expected {kind!r}")
    return dict(message[1])


async def _sleep_until(t_s: float) -> None:
    await asyncio.sleep(max(0.0, t_s - time.time()))


async def run_nats(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    cluster = NatsCluster(root / "nats", size=3)
    await asyncio.to_thread(cluster.start)
    backend = JetStreamBackend(
        cluster.urls,
        mqtt_urls=[n.mqtt_url for n in cluster.nodes],
        source=args.backend_source,
        workers=args.workers,
        replicas=3,
    )
    fleet: Fleet | None = None
    timeline = Timeline()
    per_worker_at_up: dict[int, int] = {}
    try:
        await backend.start()
        print(
            f"  backend: {args.workers} workers on stream {backend.stream} (R{backend.stream_replicas}), "
            f"filter {backend.subject}",
            flush=True,
        )
        fleet = Fleet(root / "gateways", [f"mqtt://127.0.0.1:{n.mqtt_port}" for n in cluster.nodes], args)
        ready = await fleet.ready()
        timeline.start_s = time.time()
        broker_cpu0 = sum(proc_cpu_s(n.process.pid) for n in cluster.nodes if n.process)
        duration = args.duration_s
        if args.faults in ("node", "all"):
            await _sleep_until(timeline.start_s + 0.25 * duration)
            victim = cluster.nodes[1]
            timeline.node_killed_s = time.time()
            await asyncio.to_thread(victim.kill)
            await asyncio.sleep(args.down_s)
            await asyncio.to_thread(victim.start, 60.0)
            timeline.node_back_s = time.time()
            print(
                f"  node n2 killed at +{timeline.node_killed_s - timeline.start_s:.1f} s, "
                f"back (healthy) at +{timeline.node_back_s - timeline.start_s:.1f} s",
                flush=True,
            )
        if args.faults in ("cluster", "all"):
            await _sleep_until(timeline.start_s + 0.55 * duration)
            timeline.cluster_down_s = time.time()
            await asyncio.to_thread(cluster.stop)
            await asyncio.sleep(args.down_s)
            await asyncio.to_thread(cluster.start, 60.0)
            timeline.cluster_up_s = time.time()
            per_worker_at_up = dict(backend.stats.per_worker)
            print(
                f"  cluster stopped at +{timeline.cluster_down_s - timeline.start_s:.1f} s, "
                f"back (healthy) at +{timeline.cluster_up_s - timeline.start_s:.1f} s",
                flush=True,
            )
        await _sleep_until(timeline.start_s + duration)
        broker_cpu = sum(proc_cpu_s(n.process.pid) for n in cluster.nodes if n.process) - broker_cpu0
        broker_rss = sum(proc_rss(n.process.pid) for n in cluster.nodes if n.process)
        consumed_at_stop = backend.stats.unique
        timeline.stop_s = time.time()
        snapshots: list[dict[str, dict[str, Any]]] = []

        async def watch_connz() -> None:  # NATS's view of the connections while the gateways drain
            for wait_s in (20.0, 10.0):
                await asyncio.sleep(wait_s)
                snapshots.append(await asyncio.to_thread(_connz, cluster))

        watcher = asyncio.create_task(watch_connz())
        reports = await fleet.stop()
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        produced = {i for r in reports for i in r["produced"]}
        missing = await backend.wait_for(produced, args.drain_timeout_s)
        stuck = [s for r in reports for s in r["stuck"]]
        if stuck:
            print(f"  {len(stuck)} gateways did not drain; the first: {stuck[:3]}", flush=True)
            for shot in snapshots:
                print(
                    "  NATS connz of the first (10 s apart):",
                    [shot.get(f"heatgate-{s['gateway']}") for s in stuck[:3]],
                    flush=True,
                )
        result = summarise(
            f"nats-3-node-r3 ({backend.stream} R{backend.stream_replicas})",
            args,
            ready,
            reports,
            backend.stats,
            missing,
            timeline,
            broker_cpu_s=broker_cpu if args.faults == "none" else None,
            broker_rss=broker_rss,
            consumed_at_stop=consumed_at_stop,
        )
        now = time.time()
        result["backend_source"] = args.backend_source
        result["worker_rebinds"] = dict(backend.stats.worker_restarts)
        result["worker_last_fetch_age_s"] = {
            w: round(now - t, 1) for w, t in sorted(backend.stats.last_fetch_s.items())
        }
        if timeline.cluster_up_s is not None:
            result["per_worker_messages_after_restart"] = {
                w: backend.stats.per_worker[w] - per_worker_at_up.get(w, 0) for w in range(args.workers)
            }
        return result
    finally:
        if fleet is not None:
            fleet.kill()
        await backend.stop()
        await asyncio.to_thread(cluster.stop)


async def run_mosquitto(root: Path, args: argparse.Namespace) -> dict[str, Any]:
    broker = Broker(root / "mosquitto")
    broker.start()
    backend = SharedSubscriptionBackend("127.0.0.1", broker.port, workers=args.workers)
    fleet: Fleet | None = None
    timeline = Timeline()
    try:
        await asyncio.to_thread(backend.start)
        fleet = Fleet(root / "gateways", [broker.url], args)
        ready = await fleet.ready()
        timeline.start_s = time.time()
        assert broker.process is not None
        cpu0 = proc_cpu_s(broker.process.pid)
        await _sleep_until(timeline.start_s + args.duration_s)
        broker_cpu = proc_cpu_s(broker.process.pid) - cpu0
        broker_rss = proc_rss(broker.process.pid)
        consumed_at_stop = backend.stats.unique
        timeline.stop_s = time.time()
        reports = await fleet.stop()
        produced = {i for r in reports for i in r["produced"]}
        missing = await asyncio.to_thread(backend.wait_for, produced, args.drain_timeout_s)
        return summarise(
            "mosquitto-single",
            args,
            ready,
            reports,
            backend.stats,
            missing,
            timeline,
            broker_cpu_s=broker_cpu,
            broker_rss=broker_rss,
            consumed_at_stop=consumed_at_stop,
        )
    finally:
        if fleet is not None:
            fleet.kill()
        await asyncio.to_thread(backend.stop)
        broker.stop()


def _connz(cluster: NatsCluster) -> dict[str, dict[str, Any]]:
    """Every MQTT connection by client id, as the nodes' monitoring ``/connz`` lists them."""
    import urllib.request

    found: dict[str, dict[str, Any]] = {}
    for node in cluster.nodes:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{node.http_port}/connz?limit=100000", timeout=5) as answer:
                connections = json.load(answer).get("connections") or []
        except OSError:
            continue
        for conn in connections:
            if conn.get("mqtt_client"):
                found[conn["mqtt_client"]] = {
                    "node": node.name,
                    **{k: conn.get(k) for k in ("in_msgs", "out_msgs", "pending_bytes", "idle", "uptime")},
                }
    return found


def reconnect_histogram(connects: list[float], down_s: float, up_s: float) -> dict[str, Any]:
    """Connects after the cluster went down, per second since it was healthy again."""
    after = sorted(t for t in connects if t >= down_s)
    per_second = Counter(int(t - up_s) for t in after)
    seconds = sorted(per_second)
    return {
        "reconnected": len(after),
        "per_second": {str(s): per_second[s] for s in seconds},
        "peak_per_s": max(per_second.values(), default=0),
        "p50_s": after[len(after) // 2] - up_s if after else None,
        "p90_s": after[int(len(after) * 0.9) - 1] - up_s if after else None,
        "last_s": after[-1] - up_s if after else None,
    }


def summarise(
    name: str,
    args: argparse.Namespace,
    ready: list[dict[str, Any]],
    reports: list[dict[str, Any]],
    stats: BackendStats,
    missing: set[str],
    timeline: Timeline,
    *,
    broker_cpu_s: float | None,
    broker_rss: int,
    consumed_at_stop: int,
) -> dict[str, Any]:
    n = args.gateways
    produced_list = [i for r in reports for i in r["produced"]]
    produced = set(produced_list)
    wall = sum(r["wall_run_s"] for r in reports) / len(reports)
    cpu = sum(r["cpu_run_s"] for r in reports)
    rss = sum(r["rss_peak_run"] - r["rss_empty"] for r in reports)
    connects = [t for r in reports for t in r["connects"]]
    end_s = stats.last_record_s or timeline.stop_s
    result: dict[str, Any] = {
        "broker": name,
        "gateways": n,
        "hosts": args.hosts,
        "backend_workers": args.workers,
        "duration_s": args.duration_s,
        "threads_per_host": [r["threads_run"] for r in reports],
        "open_s": max(r["open_s"] for r in ready),
        "produced": len(produced_list),
        "produced_unique": len(produced),
        "consumed_unique": len(stats.ids & produced),
        "consumed_at_stop": consumed_at_stop,
        "missing": len(missing),
        "extra": len(stats.ids - produced),
        "duplicates_before_dedup": stats.duplicates,
        "records_received": stats.records,
        "messages": stats.messages,
        "invalid": stats.invalid,
        "undelivered_in_buffers": sum(r["undelivered"] for r in reports),
        "produced_per_s": len(produced_list) / wall,
        "consumed_per_s_end_to_end": len(stats.ids & produced) / max(1e-9, end_s - timeline.start_s),
        "drain_s": max(r["drain_s"] for r in reports),
        "cpu_per_gateway_pct_of_core": 100.0 * cpu / wall / n,
        "rss_per_gateway_kib": rss / n / 1024,
        "broker_cpu_pct_of_core": None if broker_cpu_s is None else 100.0 * broker_cpu_s / wall,
        "broker_rss_mib": broker_rss / 2**20,
        "per_worker_messages": dict(stats.per_worker),
        "backend_errors": dict(stats.errors),
        "connects": len(connects),
    }
    if timeline.node_killed_s is not None and timeline.node_back_s is not None:
        result["node_loss"] = {
            "killed_at_s": timeline.node_killed_s - timeline.start_s,
            "back_at_s": timeline.node_back_s - timeline.start_s,
        }
    if timeline.cluster_down_s is not None and timeline.cluster_up_s is not None:
        result["cluster_restart"] = {
            "down_at_s": timeline.cluster_down_s - timeline.start_s,
            "up_at_s": timeline.cluster_up_s - timeline.start_s,
            **reconnect_histogram(connects, timeline.cluster_down_s, timeline.cluster_up_s),
        }
    return result


def show(result: dict[str, Any]) -> None:
    print(
        f"== {result['broker']}: {result['gateways']} gateways in {result['hosts']} processes, "
        f"{result['duration_s']} s, {result['backend_workers']} backend workers"
    )
    for key in (
        "threads_per_host",
        "open_s",
        "produced",
        "consumed_unique",
        "missing",
        "extra",
        "duplicates_before_dedup",
        "invalid",
        "undelivered_in_buffers",
        "produced_per_s",
        "consumed_per_s_end_to_end",
        "consumed_at_stop",
        "drain_s",
        "cpu_per_gateway_pct_of_core",
        "rss_per_gateway_kib",
        "broker_cpu_pct_of_core",
        "broker_rss_mib",
        "per_worker_messages",
        "backend_errors",
        "backend_source",
        "worker_rebinds",
        "worker_last_fetch_age_s",
        "per_worker_messages_after_restart",
        "node_loss",
    ):
        value = result.get(key)
        if isinstance(value, float):
            value = round(value, 3)
        print(f"  {key:30} {value}")
    restart = result.get("cluster_restart")
    if restart:
        print(
            f"  cluster restart: down at +{restart['down_at_s']:.1f} s, healthy at +{restart['up_at_s']:.1f} s; "
            f"{restart['reconnected']} reconnects, peak {restart['peak_per_s']}/s, "
            f"50 % by {restart['p50_s']:.1f} s, 90 % by {restart['p90_s']:.1f} s, last {restart['last_s']:.1f} s "
            f"after healthy"
        )
        print("  reconnects per second since healthy:", restart["per_second"])
    ok = result["missing"] == 0 and result["invalid"] == 0 and result["extra"] == 0
    print(f"  every record produced consumed exactly once after de-duplication: {'yes' if ok else 'NO'}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gateways", type=int, default=30)
    parser.add_argument("--duration-s", type=float, default=40.0)
    parser.add_argument("--hosts", type=int, default=2, help="gateway-host processes (default 2: both cores)")
    parser.add_argument("--workers", type=int, default=3, help="backend workers sharing the durable consumer")
    parser.add_argument("--broker", choices=("nats", "mosquitto", "both"), default="nats")
    parser.add_argument(
        "--backend-source",
        choices=("mqtt-msgs", "subject-stream"),
        default="mqtt-msgs",
        help="NATS backend reads $MQTT_msgs (stored before the PUBACK; default) or a stream of its "
        "own on heatgate.v1.> (captured after the PUBACK: loses records on node loss)",
    )
    parser.add_argument("--faults", choices=("none", "node", "cluster", "all"), default="all")
    parser.add_argument("--down-s", type=float, default=3.0, help="how long a killed node / the cluster stays down")
    parser.add_argument("--points", type=int, default=3, help="measurement points per gateway (1..8)")
    parser.add_argument("--tick-s", type=float, default=1.0)
    parser.add_argument("--reconnect-min-s", type=float, default=1.0)
    parser.add_argument("--reconnect-max-s", type=float, default=30.0)
    parser.add_argument("--drain-timeout-s", type=float, default=180.0)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args(argv)
    if not 1 <= args.points <= 8 or args.gateways < 1 or args.hosts < 1:
        parser.error("--points 1..8, --gateways >= 1, --hosts >= 1")
    args.hosts = min(args.hosts, args.gateways)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}; {time.strftime('%Y-%m-%d %H:%M:%S %Z')}",
        flush=True,
    )
    root = Path(tempfile.mkdtemp(prefix="heatgate-fleet-"))
    results: list[dict[str, Any]] = []
    try:
        if args.broker in ("mosquitto", "both"):
            results.append(asyncio.run(run_mosquitto(root / "mosquitto-run", args)))
            show(results[-1])
        if args.broker in ("nats", "both"):
            results.append(asyncio.run(run_nats(root / "nats-run", args)))
            show(results[-1])
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if len(results) == 2:
        base, other = results

        def ratio(key: str) -> float:
            return float(other[key]) / max(1e-9, float(base[key]))

        print(
            "== NATS vs Mosquitto (same fleet, same run): "
            f"CPU per gateway x{ratio('cpu_per_gateway_pct_of_core'):.2f}, "
            f"memory per gateway x{ratio('rss_per_gateway_kib'):.2f}, "
            f"end-to-end records/s x{ratio('consumed_per_s_end_to_end'):.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(r["missing"] == 0 and r["invalid"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
