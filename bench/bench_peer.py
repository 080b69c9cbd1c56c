"""heatgate side by side with ThingsBoard IoT Gateway (the peer), on the same heat pump.

Both gateways poll the same simulated heat pump (50 holding registers, every second) into the
same local Mosquitto at the same time and are measured the same way over the same window:
CPU (utime + stime of the process, all threads, from /proc/<pid>/stat) as % of one core, RSS
(VmRSS), requests per second at the simulator (each gateway has its own instance of the same
simulated device, in this process, counting requests), messages per second at the broker (a
subscriber on '#', by topic: heatgate/... vs v1/...; the bench's own getSessionLimits answers
are not counted).

The peer comes from PyPI (`thingsboard-gateway`, with pymodbus 3.9.2 that its Modbus connector
pins) into its own virtual environment under `.bench-venvs/` on the first run; it is never a
dependency of heatgate. The bench answers the peer's getSessionLimits RPC, which a plain broker
cannot. heatgate runs with its shipped privacy policy, as in the field (it publishes window
aggregates, so far fewer messages than the peer, which sends every reading); `--policy short`
gives it 10 s telemetry windows. Targets: heatgate CPU
<= 0.05 x the peer's, RSS <= 0.6 x.

    .venv/bin/python -m bench.bench_peer                  # 60 s measured (after a 10 s warm-up)
    .venv/bin/python -m bench.bench_peer --duration-s 300 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.peer_support.heatpump50 import heatpump50_device, tb_connector_config, write_profile
from bench.peer_support.measure import BrokerCounter, ProcessSampler, machine_description
from bench.peer_support.thingsboard import (
    PeerInstallError,
    SessionLimitsResponder,
    ensure_venv,
    start_gateway,
    write_config,
)
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.provision import Answers, provision
from heatgate.agent.status import StatusError, query_status
from heatgate.drivers.sim.modbus import SimServer, serve_tcp

REPO = Path(__file__).resolve().parent.parent
TB_PREFIXES = ("v1/gateway", "v1/devices")


def _stop(process: subprocess.Popen[bytes] | None, timeout_s: float = 15.0) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _tail(path: Path, chars: int = 2500) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"


async def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {"machine": machine_description()}
    try:
        python = await asyncio.to_thread(ensure_venv, Path(args.cache_dir))
    except (PeerInstallError, OSError, subprocess.SubprocessError) as exc:
        result["verdict"] = f"peer not installed: {exc}"
        return result
    with tempfile.TemporaryDirectory(prefix="heatgate-bench-peer-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker")
        servers: list[SimServer] = []
        counter: BrokerCounter | None = None
        responder: SessionLimitsResponder | None = None
        heatgate: subprocess.Popen[bytes] | None = None
        peer: subprocess.Popen[bytes] | None = None
        try:
            broker.start()
            counter = BrokerCounter("127.0.0.1", broker.port)
            responder = SessionLimitsResponder("127.0.0.1", broker.port)
            profile = write_profile(root / "heatpump50.toml")
            for _ in range(2):
                servers.append(await serve_tcp({1: heatpump50_device(profile)}, "127.0.0.1", 0))
            ours, theirs = servers

            state = root / "state"
            config_path = root / "heatgate.toml"
            provision(
                Answers(
                    gateway_id="gw-bench-peer",
                    region="3511 AB",
                    state_dir=state,
                    config_path=config_path,
                    broker_url=broker.url,
                    sources_toml=(
                        f'\n[[sources]]\ntype = "modbus-tcp"\nname = "heatpump"\nhost = "127.0.0.1"\n'
                        f'port = {ours.port}\n  [[sources.devices]]\n  name = "hp"\n  unit_id = 1\n'
                        f'  profile = "{profile}"\n  interval_s = 1.0\n'
                    ),
                )
            )
            if args.policy in ("short", "raw"):
                from heatgate.agent.devtools.demo import demo_policy

                text = demo_policy() if args.policy == "short" else raw_policy()
                (root / f"privacy-{args.policy}.toml").write_text(text)
                with config_path.open("a") as handle:
                    handle.write(f'\n[privacy]\npolicy_file = "{root / f"privacy-{args.policy}.toml"}"\n')
            with open(root / "heatgate.log", "wb") as log:
                heatgate = subprocess.Popen(
                    [sys.executable, "-m", "heatgate", "run", "--config", str(config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            (root / "tb").mkdir()
            config_dir = write_config(
                python, root / "tb", broker_port=broker.port, connector=tb_connector_config("127.0.0.1", theirs.port)
            )
            peer = start_gateway(python, root / "tb", config_dir)

            deadline = time.monotonic() + args.start_timeout_s
            hg_ready = tb_ready = False
            while not (hg_ready and tb_ready):
                for name, process, log_path in (
                    ("heatgate", heatgate, root / "heatgate.log"),
                    ("thingsboard-gateway", peer, root / "tb" / "thingsboard.log"),
                ):
                    if process.poll() is not None:
                        raise RuntimeError(f"{name} exited with {process.returncode}:\n{_tail(log_path)}")
                if not hg_ready:
                    try:
                        hg_ready = bool(query_status(state / "status.sock").get("broker", {}).get("connected"))
                    except StatusError:
                        pass
                tb_ready = counter.prefixes().get("v1/gateway", 0) > 0
                if time.monotonic() > deadline:
                    what = [n for n, ok in (("heatgate", hg_ready), ("thingsboard-gateway", tb_ready)) if not ok]
                    raise RuntimeError(
                        f"{' and '.join(what)} not publishing within {args.start_timeout_s:g} s; "
                        f"peer RPCs seen {responder.requests}; peer log:\n"
                        f"{_tail(root / 'tb' / 'thingsboard.log')}"
                    )
                await asyncio.sleep(0.25)
            await asyncio.sleep(args.warmup_s)

            samplers = {"heatgate": ProcessSampler(heatgate.pid), "thingsboard-gateway": ProcessSampler(peer.pid)}
            for sampler in samplers.values():
                sampler.start()
            requests0 = {"heatgate": ours.context.requests, "thingsboard-gateway": theirs.context.requests}
            prefixes0, answered0, readings0 = counter.prefixes(), responder.answered, counter.readings()
            started = time.monotonic()
            while time.monotonic() - started < args.duration_s:
                await asyncio.sleep(min(args.sample_s, max(0.05, args.duration_s - (time.monotonic() - started))))
                for sampler in samplers.values():
                    sampler.sample()
            for sampler in samplers.values():
                sampler.stop()
            window_s = time.monotonic() - started
            prefixes1, readings1 = counter.prefixes(), counter.readings()

            def messages(keys: tuple[str, ...]) -> int:
                return sum(prefixes1.get(k, 0) - prefixes0.get(k, 0) for k in keys)

            msgs = {
                "heatgate": messages(("heatgate/v1",)),
                "thingsboard-gateway": messages(TB_PREFIXES) - (responder.answered - answered0),
            }
            readings = {
                "heatgate": readings1.get("heatgate/v1", 0) - readings0.get("heatgate/v1", 0),
                "thingsboard-gateway": sum(readings1.get(k, 0) - readings0.get(k, 0) for k in TB_PREFIXES),
            }
            requests1 = {"heatgate": ours.context.requests, "thingsboard-gateway": theirs.context.requests}
            for name, sampler in samplers.items():
                result[name] = {
                    "cpu_percent": round(sampler.cpu_percent, 2),
                    "rss_max_mib": round(sampler.rss_max_mib, 1),
                    "requests_per_s": round((requests1[name] - requests0[name]) / window_s, 1),
                    "broker_messages_per_s": round(msgs[name] / window_s, 2),
                    "broker_readings_per_s": round(readings[name] / window_s, 1),
                }
            result["duration_s"] = round(window_s, 1)
            hg, tb = result["heatgate"], result["thingsboard-gateway"]
            result["cpu_ratio"] = round(hg["cpu_percent"] / tb["cpu_percent"], 3) if tb["cpu_percent"] else None
            result["rss_ratio"] = round(hg["rss_max_mib"] / tb["rss_max_mib"], 3) if tb["rss_max_mib"] else None
            met_cpu = result["cpu_ratio"] is not None and result["cpu_ratio"] <= 0.05
            met_rss = result["rss_ratio"] is not None and result["rss_ratio"] <= 0.6
            result["verdict"] = (
                f"CPU ratio {result['cpu_ratio']} "
                f"(target <= 0.05: {'met' if met_cpu else 'NOT met'}), "
                f"RSS ratio {result['rss_ratio']} "
                f"(target <= 0.6: {'met' if met_rss else 'NOT met'})"
            )
            result["peer_rpcs"] = sorted(set(responder.requests))
            result["policy"] = args.policy
        except RuntimeError as exc:
            result["verdict"] = f"peer could not be run: {exc}"
        finally:
            _stop(heatgate)
            _stop(peer)
            for server in servers:
                await server.stop()
            if responder is not None:
                responder.close()
            if counter is not None:
                counter.close()
            broker.stop()
    return result


def raw_policy() -> str:
    """The shipped policy with the telemetry stream publishing every reading of every poll, as
    the peer does: windows of 1 s (the poll interval here) with one aggregate, ``last``, so that
    each window holds one poll's reading of each point and yields exactly one record for it.
    Everything else (fields, pseudonyms, analytics) is the shipped policy's."""
    from heatgate.config import data_path

    text = data_path("privacy.toml").read_text()
    start = text.index("[streams.telemetry]")
    end = text.index("\n[", start + 1)  # the next top-level table (sub-tables are indented)
    section = text[start:end]
    section = re.sub(r"time_granularity_s = \d+", "time_granularity_s = 1", section)
    section = re.sub(r"measurement = \[[^\]]*\]", 'measurement = ["last"]', section)
    section = re.sub(r"counter = \[[^\]]*\]", 'counter = ["last"]', section)
    return "# bench: the shipped policy, telemetry raw (every reading, 1 s windows).\n" + (
        text[:start] + section + text[end:]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=60.0, help="measured window (default 60)")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="after both publish (default 10)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="RSS sampling period (default 1)")
    parser.add_argument("--start-timeout-s", type=float, default=90.0, help="for both to publish (default 90)")
    parser.add_argument("--cache-dir", default=str(REPO / ".bench-venvs"), help="where the peer's venv lives")
    parser.add_argument(
        "--policy",
        choices=["shipped", "short", "raw"],
        default="shipped",
        help="heatgate's privacy policy: shipped (default); short windows (10 s telemetry); raw: every "
        "reading of every poll published (1 s telemetry windows, one 'last' value each), the peer's output",
    )
    parser.add_argument("--json", action="store_true", help="end with one line: BENCH_JSON {...}")
    args = parser.parse_args()
    machine = machine_description()
    print(
        f"# heatgate vs ThingsBoard IoT Gateway — {machine['date']} — {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory']}, Python {machine['python']}"
    )
    result = asyncio.run(run(args))
    if "heatgate" in result:
        print(
            f"same heat pump (50 holding registers, every 1 s), same broker, measured {result['duration_s']:.0f} s, "
            f"heatgate policy {args.policy}:"
        )
        print(
            f"  {'':<22}{'CPU % core':>11}{'RSS MiB':>9}{'req/s at sim':>14}{'msgs/s at broker':>18}"
            f"{'readings/s at broker':>22}"
        )
        for name in ("heatgate", "thingsboard-gateway"):
            r = result[name]
            print(
                f"  {name:<22}{r['cpu_percent']:>11.2f}{r['rss_max_mib']:>9.1f}{r['requests_per_s']:>14.1f}"
                f"{r['broker_messages_per_s']:>18.2f}{r['broker_readings_per_s']:>22.1f}"
            )
        print(f"  peer RPCs answered/seen: {result.get('peer_rpcs')}")
    print(f"verdict: {result['verdict']}")
    if args.json:
        print("BENCH_JSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
