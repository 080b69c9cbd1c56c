"""The whole agent (`heatgate run`) at a realistic home load, and at 100 x that load.

Home load (issue 8): two heat pumps (the sim-heatpump profile: 23 points in 53 registers,
7 block reads per poll) every 10 s over Modbus TCP, one SDM630-like meter every 5 s over
Modbus RTU (9600 baud, pseudo-terminal), a DSMR 5 P1 telegram every second, ten Z-Wave
multisensors (temperature, humidity, battery) each reporting every 30 s, spread over the
period. The shipped privacy policy. A local Mosquitto (plain TCP on loopback).

100 x load: a hundred times the device traffic, by more devices where a home could have more
and shorter intervals where it could not:
  heat pumps  2 hosts x 10 units, every 1 s   (10 x devices, 10 x rate = 100 x polls)
  meters      10 units on one RTU bus at 115200 baud, every 0.5 s   (10 x 10)
  P1          one telegram every 10 ms        (100 x rate; one port)
  Z-Wave      100 multisensors, each every 3 s   (10 x 10)
with the demo policy (telemetry windows of 10 s, analytics 20 s) so that records flow through
the buffer and the publisher all the time and a growing queue would show.

The agent runs as its own process (`python -m heatgate run --config FILE`, exactly as systemd
starts it); the simulators run in this process (they count the requests they serve). CPU = utime
+ stime of the agent process over the measured window (after a warm-up) / wall time, as % of
one core; RSS from /proc/<pid>/status. The queue: every sample, the status document
(`heatgate status --json`, read from the status socket with the same function) gives the
readings queue and the queued records per stream; the least-squares trend is printed.

    .venv/bin/python -m bench.bench_agent                      # home 60 s + 100 x 30 s
    .venv/bin/python -m bench.bench_agent --duration-s 600     # the issue's 10 minutes
    .venv/bin/python -m bench.bench_agent --load home --json   # one JSON summary line at the end
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peer_support.measure import BrokerCounter, ProcessSampler, machine_description, slope_per_min
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.provision import Answers, provision
from heatgate.agent.status import StatusError, query_status
from heatgate.drivers.sim.modbus import SimServer, serve_rtu, serve_tcp
from heatgate.drivers.sim.modbus_model import heatpump_device, meter_device
from heatgate.drivers.sim.p1 import P1Simulator
from heatgate.drivers.sim.zwave import ZwaveSimulator
from heatgate.drivers.zwave.frames import DataFrame, FrameType
from heatgate.drivers.zwave.host import FUNC_APPLICATION_COMMAND

GATEWAY_ID = "gw-bench-0001"
# Requests per steady-state poll (the points with max_age_s = 3600 are read once, then skipped):
# sim-heatpump 5 block reads, sdm630 3.
HEATPUMP_REQUESTS_PER_POLL = 5
METER_REQUESTS_PER_POLL = 3


@dataclass(frozen=True)
class Load:
    name: str
    heatpump_hosts: int
    heatpump_units_per_host: int
    heatpump_interval_s: float
    meters: int
    meter_interval_s: float
    meter_baudrate: int
    p1_interval_s: float
    zwave_sensors: int
    zwave_period_s: float
    short_windows: bool

    def describe(self) -> str:
        heatpumps = self.heatpump_hosts * self.heatpump_units_per_host
        return (
            f"{heatpumps} heat pump(s) every {self.heatpump_interval_s:g} s (TCP), "
            f"{self.meters} meter(s) every {self.meter_interval_s:g} s (RTU {self.meter_baudrate}), "
            f"P1 every {self.p1_interval_s:g} s, "
            f"{self.zwave_sensors} Z-Wave sensors every {self.zwave_period_s:g} s"
        )


HOME = Load("home", 2, 1, 10.0, 1, 5.0, 9600, 1.0, 10, 30.0, short_windows=False)
X100 = Load("x100", 2, 10, 1.0, 10, 0.5, 115200, 0.01, 100, 3.0, short_windows=True)


class SensorsZwaveSim(ZwaveSimulator):
    """The Z-Wave controller simulator with N multisensors (nodes 2..N+1), each reporting
    temperature, humidity and battery once per ``period_s``, spread evenly over the period."""

    def __init__(self, *, link: str, node_ids: list[int], period_s: float) -> None:
        super().__init__(link=link, interval_s=period_s)
        self.node_ids = node_ids

    async def _report_loop(self) -> None:
        gap_s = self.interval_s / len(self.node_ids)
        tick = 0
        while True:
            for node in self.node_ids:
                await self._reporting.wait()
                started = time.monotonic()
                for command in _sensor_commands(tick + node):
                    payload = bytes([0x00, node, len(command)]) + command
                    self._send_frame(DataFrame(FrameType.REQUEST, FUNC_APPLICATION_COMMAND, payload))
                    self.stats.reports_sent += 1
                    await asyncio.sleep(0.003)  # a controller sends one frame at a time
                await asyncio.sleep(max(0.0, gap_s - (time.monotonic() - started)))
            tick += 1


def _sensor_commands(tick: int) -> list[bytes]:
    temp_c10 = 195 + tick % 20
    return [
        bytes([0x31, 0x05, 0x01, 0x22]) + temp_c10.to_bytes(2, "big", signed=True),  # temperature, 0.1 °C
        bytes([0x31, 0x05, 0x05, 0x01, 40 + tick % 15]),  # humidity %
        bytes([0x80, 0x03, 90 - tick % 3]),  # battery %
    ]


@dataclass
class Rig:
    root: Path
    load: Load
    broker: Broker | None = None
    heatpumps: list[SimServer] = field(default_factory=list)
    meters: SimServer | None = None
    p1: P1Simulator | None = None
    zwave: SensorsZwaveSim | None = None
    agent: subprocess.Popen[bytes] | None = None

    @property
    def config_path(self) -> Path:
        return self.root / "heatgate.toml"

    @property
    def modules_path(self) -> Path:
        return self.root / "agent-modules.txt"

    async def start_simulators(self) -> None:
        load = self.load
        for host in range(load.heatpump_hosts):
            devices = {
                unit: heatpump_device(serial=f"HGBENCH{host:02d}{unit:04d}", seed=host * 100 + unit)
                for unit in range(1, load.heatpump_units_per_host + 1)
            }
            self.heatpumps.append(await serve_tcp(devices, "127.0.0.1", 0))
        meters = {unit: meter_device(serial=20230000 + unit, seed=unit) for unit in range(1, load.meters + 1)}
        self.meters = await serve_rtu(meters, link=str(self.root / "meter"), baudrate=load.meter_baudrate)
        self.p1 = P1Simulator(dsmr_version="5", interval_s=load.p1_interval_s, link=self.root / "p1")
        await self.p1.start()
        self.zwave = SensorsZwaveSim(
            link=str(self.root / "zwave"), node_ids=list(range(2, 2 + load.zwave_sensors)), period_s=load.zwave_period_s
        )
        await self.zwave.start()

    def sources_toml(self) -> str:
        load = self.load
        parts = []
        for index, server in enumerate(self.heatpumps):
            parts.append(
                f'[[sources]]\ntype = "modbus-tcp"\nname = "heatpump-{index + 1}"\n'
                f'host = "127.0.0.1"\nport = {server.port}\n'
            )
            for unit in range(1, load.heatpump_units_per_host + 1):
                parts.append(
                    f'  [[sources.devices]]\n  name = "hp{index + 1}-{unit}"\n  unit_id = {unit}\n'
                    f'  profile = "sim-heatpump"\n  interval_s = {load.heatpump_interval_s}\n'
                )
        parts.append(
            f'[[sources]]\ntype = "modbus-rtu"\nname = "meter-bus"\nport = "{self.root / "meter"}"\n'
            f"baudrate = {load.meter_baudrate}\n"
        )
        for unit in range(1, load.meters + 1):
            parts.append(
                f'  [[sources.devices]]\n  name = "meter{unit}"\n  unit_id = {unit}\n'
                f'  profile = "sdm630"\n  interval_s = {load.meter_interval_s}\n'
            )
        parts.append(
            f'[[sources]]\ntype = "p1"\nname = "smartmeter"\nport = "{self.root / "p1"}"\ndsmr_version = "5"\n'
        )
        parts.append(f'[[sources]]\ntype = "zwave"\nname = "zwave"\nport = "{self.root / "zwave"}"\n')
        for node in range(2, 2 + load.zwave_sensors):
            parts.append(
                f'  [[sources.nodes]]\n  node_id = {node}\n  name = "sensor-{node}"\n  device_type = "multisensor"\n'
            )
        return "\n" + "\n".join(parts)

    def provision(self) -> None:
        assert self.broker is not None
        state = self.root / "state"
        provision(
            Answers(
                gateway_id=GATEWAY_ID,
                region="3511 AB",
                state_dir=state,
                config_path=self.config_path,
                broker_url=self.broker.url,
                sources_toml=self.sources_toml(),
            )
        )
        extra = ""
        if self.load.short_windows:
            from heatgate.agent.devtools.demo import demo_policy

            policy = self.root / "privacy-short-windows.toml"
            policy.write_text(demo_policy())
            extra = f'\n[privacy]\npolicy_file = "{policy}"\n'
        with self.config_path.open("a") as handle:
            handle.write(extra)

    def start_agent(self, limits: CpuLimits | None = None, *, modules: bool = False) -> subprocess.Popen[bytes]:
        log = open(self.root / "agent.log", "wb")  # noqa: SIM115 - closed with the process
        runner = ["bench.agent_modules", str(self.modules_path)] if modules else ["heatgate"]
        command = [sys.executable, "-m", *runner, "run", "--config", str(self.config_path)]
        if limits is not None:
            command = limits.wrap(command)
        self.agent = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        return self.agent

    def status(self) -> dict[str, Any] | None:
        try:
            return query_status(self.root / "state" / "status.sock", timeout_s=5.0)
        except StatusError:
            return None

    def sim_requests(self) -> tuple[int, int]:
        heatpump = sum(server.context.requests for server in self.heatpumps)
        return heatpump, self.meters.context.requests if self.meters else 0

    async def stop(self) -> None:
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(self.agent.wait, 20)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        for sim in (self.p1, self.zwave):
            if sim is not None:
                await sim.stop()
        for server in [*self.heatpumps, *([self.meters] if self.meters else [])]:
            await server.stop()
        if self.broker is not None:
            self.broker.stop()


@dataclass
class CpuLimits:
    """The agent on a smaller CPU, for the Pi estimate: pinned to one core (``taskset -c``)
    and/or given a CPU quota (``quota_pct`` of one core) by a cgroup of its own: cgroup v2
    ``cpu.max``, or where the machine has cgroup v1, ``cpu.cfs_quota_us`` / ``cfs_period_us``
    (the same CFS bandwidth limit). The agent's shell joins the cgroup and then execs the agent,
    so every thread it starts is inside."""

    cpu: int | None = None
    quota_pct: float | None = None
    cgroup: Path | None = None
    how: str = ""

    PERIOD_US = 100_000

    def setup(self, name: str) -> None:
        if self.quota_pct is None:
            return
        quota_us = int(self.PERIOD_US * self.quota_pct / 100)
        v2 = Path("/sys/fs/cgroup")
        if (v2 / "cgroup.controllers").exists():
            self.cgroup = v2 / name
            self.cgroup.mkdir()
            (self.cgroup / "cpu.max").write_text(f"{quota_us} {self.PERIOD_US}\n")
            self.how = f"cgroup v2 cpu.max {quota_us} {self.PERIOD_US}"
        elif Path("/sys/fs/cgroup/cpu").is_dir():
            self.cgroup = Path("/sys/fs/cgroup/cpu") / name
            self.cgroup.mkdir()
            (self.cgroup / "cpu.cfs_period_us").write_text(f"{self.PERIOD_US}\n")
            (self.cgroup / "cpu.cfs_quota_us").write_text(f"{quota_us}\n")
            self.how = f"cgroup v1 cpu.cfs_quota_us {quota_us} / cfs_period_us {self.PERIOD_US}"
        else:
            raise RuntimeError("no writable cgroup cpu controller here: the CPU quota cannot be applied")

    def wrap(self, command: list[str]) -> list[str]:
        if self.cpu is not None:
            command = ["taskset", "-c", str(self.cpu), *command]
        if self.cgroup is not None:
            procs = self.cgroup / "cgroup.procs"
            command = ["sh", "-c", f'echo $$ > "{procs}" && exec "$@"', "sh", *command]
        return command

    def describe(self) -> str:
        parts = [f"pinned to CPU {self.cpu} (taskset)"] if self.cpu is not None else []
        if self.quota_pct is not None:
            parts.append(f"{self.quota_pct:g} % of one core ({self.how})")
        return ", ".join(parts) or "no limits"

    def teardown(self) -> None:
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()
            self.cgroup = None


def queued(document: dict[str, Any]) -> tuple[int, int]:
    """(records queued in the buffer over all streams, readings waiting in the agent's queue)."""
    streams = document.get("buffer", {}).get("streams", {})
    return sum(int(s.get("queued", 0)) for s in streams.values()), int(document.get("readings_queue", 0))


async def run_load(
    load: Load,
    *,
    duration_s: float,
    warmup_s: float,
    sample_s: float,
    limits: CpuLimits | None = None,
    modules: bool = False,
) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"heatgate-bench-{load.name}-") as tmp:
        rig = Rig(Path(tmp), load)
        counter: BrokerCounter | None = None
        result: dict[str, Any] | None = None
        if limits is not None:
            limits.setup(f"heatgate-bench-{os.getpid()}-{load.name}")
        try:
            rig.broker = Broker(rig.root / "broker")
            rig.broker.start()
            await rig.start_simulators()
            rig.provision()
            counter = BrokerCounter("127.0.0.1", rig.broker.port)
            agent = rig.start_agent(limits, modules=modules)
            deadline = time.monotonic() + 30
            while True:
                if agent.poll() is not None:
                    raise RuntimeError(
                        f"the agent exited with {agent.returncode}:\n"
                        + (rig.root / "agent.log").read_text(errors="replace")[-3000:]
                    )
                document = await asyncio.to_thread(rig.status)
                if document and document.get("broker", {}).get("connected"):
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError("the agent did not connect within 30 s")
                await asyncio.sleep(0.2)
            await asyncio.sleep(warmup_s)
            sampler = ProcessSampler(agent.pid)
            sampler.start()
            hp0, meter0 = rig.sim_requests()
            msgs0 = counter.snapshot()
            p10 = rig.p1.stats.telegrams_sent if rig.p1 else 0
            z0 = rig.zwave.stats.reports_sent if rig.zwave else 0
            started = time.monotonic()
            trend: list[tuple[float, int, int]] = []
            while (elapsed := time.monotonic() - started) < duration_s:
                document = await asyncio.to_thread(rig.status)
                if document is not None:
                    records, readings = queued(document)
                    trend.append((elapsed, records, readings))
                sampler.sample()
                await asyncio.sleep(min(sample_s, max(0.05, duration_s - (time.monotonic() - started))))
            sampler.stop()
            window_s = sampler.wall_end_s - sampler.wall_start_s
            hp1, meter1 = rig.sim_requests()
            final = await asyncio.to_thread(rig.status) or {}
            sources = final.get("sources", {})
            expected_hp = (
                load.heatpump_hosts
                * load.heatpump_units_per_host
                * HEATPUMP_REQUESTS_PER_POLL
                / load.heatpump_interval_s
            )
            expected_meter = load.meters * METER_REQUESTS_PER_POLL / load.meter_interval_s
            result = {
                "poll_rate_achieved": round(
                    min((hp1 - hp0) / window_s / expected_hp, (meter1 - meter0) / window_s / expected_meter), 3
                ),
                "load": load.name,
                "describe": load.describe(),
                "duration_s": round(window_s, 1),
                "cpu_percent": round(sampler.cpu_percent, 2),
                "rss_max_mib": round(sampler.rss_max_mib, 1),
                "rss_last_mib": round(sampler.rss_last_mib, 1),
                "heatpump_requests_per_s": round((hp1 - hp0) / window_s, 1),
                "meter_requests_per_s": round((meter1 - meter0) / window_s, 1),
                "p1_telegrams_per_s": round(((rig.p1.stats.telegrams_sent if rig.p1 else 0) - p10) / window_s, 1),
                "zwave_reports_per_s": round(((rig.zwave.stats.reports_sent if rig.zwave else 0) - z0) / window_s, 2),
                "broker_messages_per_s": round((counter.snapshot() - msgs0) / window_s, 2),
                "queued_records_trend_per_min": round(slope_per_min([(t, r) for t, r, _ in trend]), 2),
                "readings_queue_trend_per_min": round(slope_per_min([(t, q) for t, _, q in trend]), 2),
                "queued_records_samples": [r for _, r, _ in trend],
                "queued_records_troughs": troughs_and_peaks([(t, r) for t, r, _ in trend])[0],
                "queued_records_peaks": troughs_and_peaks([(t, r) for t, r, _ in trend])[1],
                "readings_queue_samples": [q for _, _, q in trend],
                "sources_not_running": sorted(n for n, s in sources.items() if s.get("state") != "running"),
                "healthy": bool(final.get("healthy")),
                "cpu_limits": limits.describe() if limits is not None else "no limits",
                "load_average": [round(x, 2) for x in os.getloadavg()],
            }
            return result
        finally:
            if counter is not None:
                counter.close()
            await rig.stop()
            if modules and result is not None and rig.modules_path.exists():
                packages = rig.modules_path.read_text().split()
                result["imported_packages"] = packages
                result["forbidden_imported"] = sorted(set(packages) & FORBIDDEN_IN_DAEMON)
            if limits is not None:
                limits.teardown()


FORBIDDEN_IN_DAEMON = frozenset({"sqlite_utils", "rich", "click", "pluggy", "dateutil", "pygments"})
"""Packages the daemon must not import (issue 20): the installer tools' and the CLI's libraries."""

WINDOW_S = 10.0
"""Troughs and peaks are taken per 10 s: the telemetry window of the short-window policy, so
every block holds one window's burst of records and the drain after it."""


def troughs_and_peaks(samples: list[tuple[float, int]]) -> tuple[list[int], list[int]]:
    blocks: dict[int, list[int]] = {}
    for t, value in samples:
        blocks.setdefault(int(t // WINDOW_S), []).append(value)
    return [min(v) for _, v in sorted(blocks.items())], [max(v) for _, v in sorted(blocks.items())]


def keeps_up(result: dict[str, Any]) -> bool:
    """No growing queue: after every window's burst the buffer drains back to (nearly) empty,
    the bursts do not grow, the readings queue stays small, and the Modbus polls run at >= 90 %
    of the configured rate (a poller that falls behind would hide a backlog in the devices)."""
    troughs, peaks = result["queued_records_troughs"], result["queued_records_peaks"]
    readings = result["readings_queue_samples"]
    if not troughs or not readings:
        return False
    drained = max(troughs) <= 10 + 0.05 * max(peaks)
    flat_peaks = len(peaks) < 3 or peaks[-1] <= 1.5 * max(peaks[:-1]) + 10
    return drained and flat_peaks and max(readings) < 1000 and result["poll_rate_achieved"] >= 0.9


def print_result(result: dict[str, Any]) -> None:
    print(f"[{result['load']}] {result['describe']}")
    print(
        f"  measured {result['duration_s']:.0f} s: agent CPU {result['cpu_percent']:.2f} % of one core, "
        f"RSS max {result['rss_max_mib']:.1f} MiB (last {result['rss_last_mib']:.1f} MiB)"
    )
    print(
        f"  at the simulators: heat pumps {result['heatpump_requests_per_s']} req/s, meters "
        f"{result['meter_requests_per_s']} req/s, P1 {result['p1_telegrams_per_s']} telegrams/s, Z-Wave "
        f"{result['zwave_reports_per_s']} reports/s; at the broker {result['broker_messages_per_s']} msgs/s"
    )
    print(
        f"  Modbus poll rate achieved (lower of heat pumps, meters): {100 * result['poll_rate_achieved']:.0f} % "
        "of the configured"
    )
    print(
        f"  queued records (buffer, all streams): least-squares trend {result['queued_records_trend_per_min']:+.1f}/min"
    )
    print(
        f"  per {WINDOW_S:g} s block: troughs {result['queued_records_troughs']}, "
        f"peaks {result['queued_records_peaks']}"
    )
    readings = result["readings_queue_samples"]
    print(f"  readings queue: max {max(readings, default=0)}, trend {result['readings_queue_trend_per_min']:+.1f}/min")
    if result["sources_not_running"]:
        print(f"  sources not running at the end: {result['sources_not_running']}")
    print(f"  healthy at the end: {result['healthy']}; keeps up: {keeps_up(result)}")
    print(f"  agent CPU limits: {result['cpu_limits']}; load average at the end: {result['load_average']}")
    if "imported_packages" in result:
        print(f"  imported top-level packages ({len(result['imported_packages'])}): {result['imported_packages']}")
        print(f"  forbidden in the daemon and imported: {result['forbidden_imported'] or 'none'}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--load", choices=["home", "x100", "both"], default="both")
    parser.add_argument("--duration-s", type=float, default=60.0, help="measured window at home load (default 60)")
    parser.add_argument("--x100-duration-s", type=float, default=30.0, help="measured window at 100 x (default 30)")
    parser.add_argument("--warmup-s", type=float, default=10.0, help="after the broker connection (default 10)")
    parser.add_argument("--sample-s", type=float, default=1.0, help="status/RSS sampling period (default 1)")
    parser.add_argument("--json", action="store_true", help="end with one line: BENCH_JSON {...}")
    parser.add_argument("--cpu", type=int, default=None, help="pin the agent to this CPU (taskset -c)")
    parser.add_argument(
        "--cpu-quota-pct", type=float, default=None, help="cap the agent at this %% of one core (a cgroup of its own)"
    )
    parser.add_argument(
        "--modules", action="store_true", help="report the top-level packages the agent imported (bench.agent_modules)"
    )
    args = parser.parse_args()
    limits = None
    if args.cpu is not None or args.cpu_quota_pct is not None:
        limits = CpuLimits(cpu=args.cpu, quota_pct=args.cpu_quota_pct)
    machine = machine_description()
    print(
        f"# heatgate whole-agent benchmark — {machine['date']} — {machine['cpu']}, {machine['cores']} cores, "
        f"{machine['memory']}, Python {machine['python']}"
    )
    results: dict[str, Any] = {"machine": machine}
    for load, duration_s in ((HOME, args.duration_s), (X100, args.x100_duration_s)):
        if args.load not in (load.name, "both"):
            continue
        result = asyncio.run(
            run_load(
                load,
                duration_s=duration_s,
                warmup_s=args.warmup_s,
                sample_s=args.sample_s,
                limits=limits,
                modules=args.modules,
            )
        )
        result["keeps_up"] = keeps_up(result)
        print_result(result)
        results[load.name] = result
    if "home" in results:
        home = results["home"]
        print(
            f"home targets: CPU < 2 %: {'met' if home['cpu_percent'] < 2 else 'NOT met'}; "
            f"RSS <= 40 MiB (issue 20): {'met' if home['rss_max_mib'] <= 40 else 'NOT met'}"
        )
    if args.json:
        print("BENCH_JSON " + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
