"""Soak: the agent on the shipped defaults for an hour, as a customer's gateway lives it.

    .venv/bin/python -m bench.soak                          # one hour (issue 14)
    .venv/bin/python -m bench.soak --duration-s 120         # a check of the bench itself
    .venv/bin/python -m bench.soak --json-out soak.json

What runs: ``python -m heatgate run`` with the shipped example config's settings (only ports and
paths changed) and the shipped privacy policy, against the example's four simulators, each its
own process (heat pump over Modbus TCP, energy meter over Modbus RTU on a pseudo-terminal,
DSMR 5 P1 telegrams every second, a Z-Wave controller: home load); a real Mosquitto with
persistence. Every ``--fault-every-s`` the heat pump simulator is restarted with ``--fault
CODE@1 --clear-after …`` (its only way to show a new fault); every ``--command-every-s`` a signed
``ping`` goes through the broker (as ``heatgate cmd send`` does it); at ``--restart-at-s`` the
broker is stopped for ``--restart-down-s`` and started again. The periods default to 10 min,
5 min and half-way for an hour and scale with ``--duration-s``.

At the end the agent is stopped (SIGTERM) and the report says: connections the broker accepted
from the agent (its log; expected 2: start and after the restart), records committed (every id,
from a trigger the harness adds to buffer.db) vs delivered (ids at a subscriber on ``#`` with a
persistent session), missing, duplicates and whether they arrived around the restart, RSS at
start/end/max, CPU as % of one core, commands answered, faults delivered.
"""

from __future__ import annotations

import argparse
import json
import platform
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.peer_support.measure import ProcessSampler, machine_description
from heatgate.agent.cli.cmd import Endpoint, SendError, exchange
from heatgate.agent.devtools.harness import HarnessError, wait_until
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.shipped import (
    ShippedGateway,
    ShippedSims,
    broker_connections,
    committed_log,
    install_commit_log,
)
from heatgate.agent.devtools.subscriber import Subscriber

HOUR_S = 3600.0
FAULT_EVERY_HOUR_S = 600.0
COMMAND_EVERY_HOUR_S = 300.0
FAULT_CODES = (101, 203, 305, 407, 509, 611)
NEAR_RESTART_S = 60.0
"""Duplicates arriving within this long after the broker came back count as around the restart."""


@dataclass
class Plan:
    duration_s: float
    fault_every_s: float
    command_every_s: float
    restart_at_s: float
    restart_down_s: float
    sample_every_s: float


@dataclass
class Events:
    faults: list[tuple[float, int]] = field(default_factory=list)
    commands: list[tuple[float, str]] = field(default_factory=list)
    restart: tuple[float, float] | None = None  # (stopped, started) in s since start


def plan_from(args: argparse.Namespace) -> Plan:
    scale = args.duration_s / HOUR_S
    return Plan(
        duration_s=args.duration_s,
        fault_every_s=args.fault_every_s or FAULT_EVERY_HOUR_S * scale,
        command_every_s=args.command_every_s or COMMAND_EVERY_HOUR_S * scale,
        restart_at_s=args.restart_at_s if args.restart_at_s is not None else args.duration_s / 2,
        restart_down_s=args.restart_down_s,
        sample_every_s=args.sample_every_s,
    )


def received(subscriber: Subscriber) -> list[tuple[str, float, str]]:
    """(record id, arrival monotonic, body type) of every record that reached the subscriber."""
    with subscriber._cond:
        messages = list(subscriber.messages)
    found = []
    for message in messages:
        try:
            document = json.loads(message.payload)
        except ValueError:
            continue
        if isinstance(document, dict):
            for record in document.get("records", []):
                if isinstance(record, dict) and "id" in record:
                    found.append((str(record["id"]), message.at_monotonic, str(record.get("body", {}).get("type"))))
    return found


def still_buffered(gateway: ShippedGateway) -> set[str]:
    conn = sqlite3.connect(f"file:{gateway.db_path}?mode=ro", uri=True, timeout=10.0)
    try:
        return {str(row[0]) for row in conn.execute("SELECT id FROM records")}
    finally:
        conn.close()


def run(plan: Plan, root: Path) -> dict[str, Any]:
    broker = Broker(root / "broker", persistence=True)
    broker.start()
    sims = ShippedSims(root / "sims").start()
    subscriber = Subscriber(
        "127.0.0.1",
        broker.port,
        ["#"],
        client_id="soak-backend",
        clean_start=False,
        session_expiry_s=int(plan.duration_s) + 3600,
    ).start()
    gateway = ShippedGateway(root / "gw", broker_url=broker.url, sims=sims)
    events = Events()
    sampler: ProcessSampler | None = None
    exit_code: int | None = None
    try:
        gateway.provision()
        install_commit_log(gateway)
        gateway.start()
        gateway.wait_status(lambda s: bool(s["broker"].get("connected")), timeout_s=60, what="the agent connected")
        start = time.monotonic()
        sampler = ProcessSampler(gateway.pid)
        sampler.start()
        next_fault = plan.fault_every_s / 2
        next_command = plan.command_every_s / 2
        next_sample = plan.sample_every_s
        restarted = False
        fault_index = 0
        endpoint = Endpoint(host="127.0.0.1", port=broker.port, tls=None)
        while (now := time.monotonic() - start) < plan.duration_s:
            if not gateway.running:
                raise HarnessError(
                    f"the agent exited with {gateway.process.poll() if gateway.process else None}:\n"
                    + gateway.log_tail()
                )
            if not restarted and now >= plan.restart_at_s:
                broker.stop()
                stopped_at = time.monotonic() - start
                time.sleep(plan.restart_down_s)
                broker.start()
                events.restart = (stopped_at, time.monotonic() - start)
                restarted = True
                print(f"[{now:7.1f} s] broker restarted after {plan.restart_down_s:g} s down", flush=True)
            if now >= next_fault:
                code = FAULT_CODES[fault_index % len(FAULT_CODES)]
                fault_index += 1
                sims.restart_heatpump("--fault", f"{code}@1", "--clear-after", f"{max(1.0, plan.fault_every_s / 2):g}")
                events.faults.append((now, code))
                next_fault += plan.fault_every_s
                print(f"[{now:7.1f} s] fault {code} injected", flush=True)
            if now >= next_command:
                try:
                    response = exchange(
                        endpoint,
                        gateway.topic("cmd/ping"),
                        gateway.topic("cmd/response"),
                        gateway.signed("ping"),
                        wait_s=30.0,
                    )
                    outcome: str = response.outcome
                except SendError as exc:
                    outcome = f"no answer: {exc.reason}"
                events.commands.append((now, outcome))
                next_command += plan.command_every_s
                print(f"[{now:7.1f} s] command ping: {outcome}", flush=True)
            if now >= next_sample:
                sampler.sample()
                next_sample += plan.sample_every_s
            time.sleep(0.5)
        sampler.stop()
        try:  # let what was committed so far go out, so that the stop is judged on its own
            wait_until(
                lambda: {row[0] for row in committed_log(gateway)} <= {r[0] for r in received(subscriber)},
                timeout_s=30,
                what="the records committed so far at the subscriber",
                poll_s=0.5,
            )
        except HarnessError:
            pass  # reported as left in the buffer / missing
        stop_s = time.time()
        exit_code = gateway.stop(timeout_s=30.0)
        log = committed_log(gateway)
        committed = [row[0] for row in log]
        at_stop = {row[0] for row in log if row[2] >= stop_s}
        buffered = still_buffered(gateway)
        try:  # what the broker still had in flight for the subscriber
            wait_until(
                lambda: set(committed) - buffered <= {r[0] for r in received(subscriber)},
                timeout_s=30,
                what="every committed record at the subscriber",
                poll_s=0.5,
            )
        except HarnessError:
            pass
        return report(
            plan, events, start, broker, gateway, sampler, subscriber, committed, buffered, at_stop, exit_code
        )
    finally:
        gateway.close()
        subscriber.stop()
        sims.close()
        broker.stop()


def report(
    plan: Plan,
    events: Events,
    start: float,
    broker: Broker,
    gateway: ShippedGateway,
    sampler: ProcessSampler,
    subscriber: Subscriber,
    committed: list[str],
    buffered: set[str],
    at_stop: set[str],
    exit_code: int | None,
) -> dict[str, Any]:
    """``at_stop``: records committed by the clean stop itself (the open aggregation windows
    closed, ``agent.stop``); those left in the buffer go out at the next start."""
    arrivals = received(subscriber)
    counts = Counter(r[0] for r in arrivals)
    produced = set(committed)
    delivered = set(counts)
    missing = sorted(produced - delivered - buffered)
    duplicate_ids = {i for i, n in counts.items() if n > 1}
    near_restart = 0
    if events.restart is not None:
        low, high = events.restart[0], events.restart[1] + NEAR_RESTART_S
        first_seen: dict[str, float] = {}
        for record_id, at, _type in arrivals:
            if record_id in first_seen and record_id in duplicate_ids and low <= at - start <= high:
                near_restart += 1
            first_seen.setdefault(record_id, at)
    extra_copies = sum(n - 1 for n in counts.values() if n > 1)
    with subscriber._cond:
        responses = sum(1 for m in subscriber.messages if m.topic == gateway.topic("cmd/response"))
    rss = sampler.rss_samples
    answered = sum(1 for _at, outcome in events.commands if outcome == "done")
    return {
        "machine": machine_description(),
        "plan": asdict(plan),
        "broker_connections": broker_connections(broker, gateway.client_id),
        "records_committed": len(produced),
        "records_delivered_distinct": len(delivered & produced),
        "records_missing": len(missing),
        "missing_ids": missing[:20],
        "records_committed_at_stop": len(at_stop),
        "records_left_in_buffer": len(buffered),
        "records_left_in_buffer_from_before_stop": len(buffered - at_stop),
        "duplicate_ids": len(duplicate_ids),
        "duplicate_copies": extra_copies,
        "duplicate_copies_around_restart": near_restart,
        "rss_start_mib": round(rss[0] / 2**20, 1) if rss else None,
        "rss_end_mib": round(rss[-1] / 2**20, 1) if rss else None,
        "rss_max_mib": round(max(rss) / 2**20, 1) if rss else None,
        "cpu_percent_of_a_core": round(sampler.cpu_percent, 2),
        "commands_sent": len(events.commands),
        "commands_answered": answered,
        "messages_on_cmd_response": responses,
        "security_records_delivered": sum(1 for r in arrivals if r[2] == "audit"),
        "faults_injected": len(events.faults),
        "fault_records_delivered": sum(1 for r in arrivals if r[2] == "fault"),
        "restart_s": events.restart,
        "agent_exit_code": exit_code,
    }


def print_table(result: dict[str, Any]) -> None:
    plan = result["plan"]
    print(
        f"\nsoak: {plan['duration_s']:g} s on the shipped defaults; faults every {plan['fault_every_s']:g} s, "
        f"a command every {plan['command_every_s']:g} s, broker restart at {plan['restart_at_s']:g} s"
    )
    rows = [
        ("broker connections (at the broker)", result["broker_connections"], "2 (start + restart)"),
        ("records committed", result["records_committed"], ""),
        ("records delivered (distinct)", result["records_delivered_distinct"], "= committed"),
        ("missing", result["records_missing"], "0"),
        ("committed by the clean stop (windows closed)", result["records_committed_at_stop"], ""),
        ("left in buffer, committed before the stop", result["records_left_in_buffer_from_before_stop"], "0"),
        (
            "left in buffer, committed by the stop",
            result["records_left_in_buffer"] - result["records_left_in_buffer_from_before_stop"],
            "sent at next start",
        ),
        (
            "duplicate ids / extra copies",
            f"{result['duplicate_ids']} / {result['duplicate_copies']}",
            "around the restart only",
        ),
        ("extra copies around the restart", result["duplicate_copies_around_restart"], ""),
        (
            "RSS start / end / max (MiB)",
            f"{result['rss_start_mib']} / {result['rss_end_mib']} / {result['rss_max_mib']}",
            "flat",
        ),
        ("CPU (% of one core)", result["cpu_percent_of_a_core"], ""),
        ("commands answered / sent", f"{result['commands_answered']} / {result['commands_sent']}", "all"),
        ("messages on cmd/response", result["messages_on_cmd_response"], "= commands sent"),
        ("security (audit) records delivered", result["security_records_delivered"], ""),
        (
            "faults injected / fault records delivered",
            f"{result['faults_injected']} / {result['fault_records_delivered']}",
            "",
        ),
        ("agent exit code (SIGTERM)", result["agent_exit_code"], "0"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value, expected in rows:
        print(f"  {name:<{width}}  {value!s:>16}   {expected}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=HOUR_S, help="how long (default 3600)")
    parser.add_argument("--fault-every-s", type=float, help="a new heat-pump fault this often (default: 600 per hour)")
    parser.add_argument("--command-every-s", type=float, help="a signed command this often (default: 300 per hour)")
    parser.add_argument("--restart-at-s", type=float, help="restart the broker then (default: half-way)")
    parser.add_argument("--restart-down-s", type=float, default=5.0, help="the broker stays down this long (5)")
    parser.add_argument("--sample-every-s", type=float, default=10.0, help="RSS sample period (default 10)")
    parser.add_argument("--json-out", type=Path, help="write the result as JSON to FILE")
    parser.add_argument("--workdir", type=Path, help="keep logs, config and database here (default: a temp dir)")
    args = parser.parse_args()
    plan = plan_from(args)
    print(f"machine: {platform.node()} {platform.machine()} Python {platform.python_version()}", flush=True)
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        result = run(plan, args.workdir)
    else:
        with tempfile.TemporaryDirectory(prefix="heatgate-soak-") as tmp:
            result = run(plan, Path(tmp))
    print_table(result)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(result, indent=2) + "\n")
    ok = (
        result["broker_connections"] <= 2
        and result["records_missing"] == 0
        and result["records_left_in_buffer_from_before_stop"] == 0
        and result["commands_answered"] == result["commands_sent"]
        and result["messages_on_cmd_response"] == result["commands_sent"]
    )
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
