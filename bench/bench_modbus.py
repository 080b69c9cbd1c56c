"""Modbus benchmarks: requests per poll, modelled RTU wire time, client CPU per poll.

    .venv/bin/python -m bench.bench_modbus [--polls N]

1. Requests per poll cycle for each shipped profile: the planner's plan, the fewest requests
   any plan can make (the same planner with gap cost ignored), and one request per point (the
   naive baseline).
2. Modelled RTU wire time of one full poll cycle at 9600 and 19200 baud: per request
   (8 request bytes + 5 + data response bytes) x 11 bits / baud + two 3.5-character silences
   + 20 ms slave turnaround; against the same formula's lower bound (fewest requests, no gap
   registers) and against one request per point.
3. Client CPU per poll cycle against the simulator (in a child process, over TCP): planned
   vs one request per point, measured in the same run.
4. Cost of the self-healing split: for each shipped profile whose plan reads across unused
   registers, a register-image device (in process, over TCP) refuses one undeclared register
   inside the first such gap; requests of the first poll (refused block, split, bisection),
   of the next poll, and of the first poll after a restart (the learned range persisted),
   against the planned requests per cycle; and the split's modelled RTU wire time at 9600 baud.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import subprocess
import sys
import time

from heatgate.agent.config import ModbusDevice, ModbusTcpSource
from heatgate.drivers.modbus.planner import Block, plan_profile
from heatgate.drivers.modbus.profile import BIT_TABLES, Profile, load_profile, shipped_profiles
from heatgate.drivers.modbus.source import make_modbus_source

TURNAROUND_S = 0.020


def wire_time_s(blocks: list[Block], baud: int, *, data_only: bool = False) -> float:
    total = 0.0
    for b in blocks:
        items = sum(p.count for p in b.points) if data_only else b.count
        data = (items + 7) // 8 if b.table in BIT_TABLES else 2 * items
        frame_bytes = 8 + 5 + data
        total += frame_bytes * 11 / baud + 2 * 3.5 * 11 / baud + TURNAROUND_S
    return total


def per_point(profile: Profile) -> list[Block]:
    return [Block(p.table, p.address, p.count, (p,), p.max_age_s) for p in profile.points]


def fewest(profile: Profile) -> list[Block]:
    return plan_profile(profile, overhead_bytes=10**6)


def requests_table() -> None:
    print("1. requests per full poll cycle (all poll classes due)")
    print(f"   {'profile':<14}{'points':>7}{'planned':>9}{'fewest':>8}{'per point':>11}{'planned/fewest':>16}")
    for name in shipped_profiles():
        prof = load_profile(name)
        planned, low, naive = plan_profile(prof), fewest(prof), per_point(prof)
        print(
            f"   {name:<14}{len(prof.points):>7}{len(planned):>9}{len(low):>8}{len(naive):>11}"
            f"{len(planned) / len(low):>16.2f}"
        )


def wire_table() -> None:
    print("2. modelled RTU wire time of one full poll cycle (ms)")
    print(
        f"   {'profile':<14}{'baud':>6}{'planned':>9}{'bound':>8}{'per point':>11}{'planned/bound':>15}"
        f"{'per point/planned':>19}"
    )
    for name in shipped_profiles():
        prof = load_profile(name)
        for baud in (9600, 19200):
            planned = wire_time_s(plan_profile(prof), baud)
            bound = wire_time_s(fewest(prof), baud, data_only=True)
            naive = wire_time_s(per_point(prof), baud)
            print(
                f"   {name:<14}{baud:>6}{planned * 1000:>9.0f}{bound * 1000:>8.0f}{naive * 1000:>11.0f}"
                f"{planned / bound:>15.2f}{naive / planned:>19.2f}"
            )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _cpu_per_poll(port: int, polls: int, naive: bool) -> tuple[float, int]:
    config = ModbusTcpSource(
        name="bench",
        host="127.0.0.1",
        port=port,
        timeout_s=1.0,
        devices=[ModbusDevice(name="hp1", unit_id=1, profile="sim-heatpump")],
    )
    runner = make_modbus_source(config)
    state = runner.devices["hp1"]
    if naive:
        state.blocks = per_point(state.profile)
    else:
        state.blocks = [b for b in plan_profile(state.profile)]
    state.blocks = [Block(b.table, b.start, b.count, b.points, None) for b in state.blocks]  # all due
    await runner.poll_device(state)  # connect, warm up
    before_requests = state.requests
    t0 = time.process_time()
    for _ in range(polls):
        await runner.poll_device(state)
    cpu = time.process_time() - t0
    runner.link.close()
    return cpu / polls, (state.requests - before_requests) // polls


def cpu_table(polls: int) -> None:
    port = _free_port()
    sim = subprocess.Popen(
        [sys.executable, "-m", "heatgate", "sim", "heatpump", "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=dict(os.environ),
    )
    try:
        assert sim.stdout is not None
        sim.stdout.readline()  # "serving ..." once it listens
        planned_cpu, planned_req = asyncio.run(_cpu_per_poll(port, polls, naive=False))
        naive_cpu, naive_req = asyncio.run(_cpu_per_poll(port, polls, naive=True))
    finally:
        sim.terminate()
        sim.wait(timeout=10)
    print(f"3. client CPU per full poll cycle of sim-heatpump over TCP ({polls} polls each)")
    print(f"   planned:   {planned_cpu * 1e3:.2f} ms CPU, {planned_req} requests")
    print(f"   per point: {naive_cpu * 1e3:.2f} ms CPU, {naive_req} requests")
    print(f"   per point / planned: {naive_cpu / planned_cpu:.2f}x")


def _undeclared_gap(prof: Profile) -> tuple[str, int] | None:
    for block in plan_profile(prof):
        if block.table in BIT_TABLES:
            continue
        cursor = block.start
        for point in block.points:
            if point.address > cursor:
                return block.table, cursor
            cursor = point.end
    return None


async def _heal_cost(prof_name: str, state_dir: str) -> tuple[int, int, int, int, int] | None:
    from pathlib import Path

    from heatgate.drivers.sim.modbus import serve_tcp
    from heatgate.drivers.sim.modbus_model import RegisterImageDevice

    prof = load_profile(prof_name)
    gap = _undeclared_gap(prof)
    if gap is None:
        return None
    tables: dict[str, dict[int, int]] = {}
    for point in prof.points:
        for a in range(point.address, point.end):
            tables.setdefault(point.table, {})[a] = 0
    counts: list[int] = []
    heal = 0
    for _ in range(2):  # a first run (learns), then a restart on the same state dir
        device = RegisterImageDevice(tables=tables, unreadable=[(gap[0], gap[1], gap[1])])
        server = await serve_tcp({1: device}, port=0)
        config = ModbusTcpSource(
            name="bench",
            host="127.0.0.1",
            port=server.port,
            timeout_s=1.0,
            devices=[ModbusDevice(name="d", unit_id=1, profile=prof_name)],
        )
        runner = make_modbus_source(config, state_dir=Path(state_dir))
        state = runner.devices["d"]
        try:
            for _ in range(2):
                before = state.requests
                await runner.poll_device(state)
                counts.append(state.requests - before)
            heal = max(heal, state.heal_requests)
        finally:
            runner.link.close()
            await server.stop()
    return len(plan_profile(prof)), counts[0], counts[1], counts[2], heal


def heal_table() -> None:
    import tempfile

    print("4. self-healing split: one undeclared unreadable register inside a merged block")
    print(
        f"   {'profile':<14}{'planned':>9}{'1st poll':>10}{'2nd poll':>10}{'restart':>9}{'split reqs':>12}"
        f"{'split ms@9600':>15}"
    )
    for name in shipped_profiles():
        with tempfile.TemporaryDirectory() as state_dir:
            result = asyncio.run(_heal_cost(name, state_dir))
        if result is None:
            print(f"   {name:<14}  (its plan reads no unused register: nothing to split)")
            continue
        planned, first, second, restart, heal = result
        # A split request reads a point or a small range: model it at 2 registers of data.
        split_ms = heal * ((8 + 5 + 4) * 11 / 9600 + 2 * 3.5 * 11 / 9600 + TURNAROUND_S) * 1000
        print(f"   {name:<14}{planned:>9}{first:>10}{second:>10}{restart:>9}{heal:>12}{split_ms:>15.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--polls", type=int, default=50, help="poll cycles for the CPU figure (default 50)")
    args = parser.parse_args()
    requests_table()
    wire_table()
    cpu_table(args.polls)
    heal_table()


if __name__ == "__main__":
    main()
