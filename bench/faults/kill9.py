"""kill -9 of the agent at random moments under 100 x home load; prints a PASS/FAIL verdict.

    .venv/bin/python -m bench.faults.kill9              # 50 rounds (~3 min)
    .venv/bin/python -m bench.faults.kill9 --rounds 5   # quick

Load: the P1 simulator writing a DSMR 5 telegram every 10 ms (100 x one per second) on a
pseudo-terminal, the heat-pump and energy-meter simulators over Modbus TCP polled every 100 ms
(100 x every 10 s): ≈3,350 readings/s into the agent, ≈180 records/s committed (1 s aggregation
windows). Each round: start the agent, wait a random 0.3-4 s (start-up included), SIGKILL,
``PRAGMA integrity_check``, read the ids in buffer.db (decrypted by the buffer). In ~40 % of
rounds the broker is unreachable, so a backlog is killed with the agent. At the end one clean
run drains, and every id ever seen committed must be at the subscriber.
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

from heatgate.agent.devtools.harness import KillRound, LoadRig, kill_rounds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--load", type=float, default=100.0, help="multiple of home load (default 100)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--max-s", type=float, default=4.0, help="longest run before a kill (default 4 s)")
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()} Python {platform.python_version()}; "
        f"{args.rounds} rounds at {args.load:g} x home load, seed {args.seed}"
    )

    def show(number: int, r: KillRound) -> None:
        print(
            f"  round {number + 1:3d}: {'outage' if r.outage else 'broker'} killed after {r.after_s:4.2f} s: "
            f"integrity {r.integrity}, {r.in_db} in db, {r.undelivered} not yet delivered",
            flush=True,
        )

    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="heatgate-kill9-") as tmp,
        LoadRig(Path(tmp) / "rig", load=args.load) as rig,
    ):
        rig.start()
        result = kill_rounds(rig, args.rounds, seed=args.seed, max_s=args.max_s, on_round=show)
    bad_integrity = [i + 1 for i, r in enumerate(result.rounds) if r.integrity != "ok"]
    killed_with_backlog = sum(1 for r in result.rounds if r.undelivered)
    undelivered = sum(r.undelivered for r in result.rounds)
    duplicates = result.received - result.received_distinct
    print(
        f"rounds: {len(result.rounds)}; integrity_check ok in {len(result.rounds) - len(bad_integrity)}"
        f" (+ final: {result.final_integrity}); killed with undelivered records: {killed_with_backlog} rounds,"
        f" {undelivered} record-kills"
    )
    print(
        f"committed ids seen after kills: {result.committed}; missing at the subscriber: {len(result.missing)}; "
        f"received {result.received} ({result.received_distinct} distinct, {duplicates} duplicates "
        f"= {duplicates / max(1, result.received_distinct):.1%}); last drain {result.drain_s:.1f} s; "
        f"clean stop exit {result.final_exit_code}; total {time.monotonic() - started:.0f} s"
    )
    ok = (
        not bad_integrity
        and result.final_integrity == "ok"
        and not result.missing
        and result.committed > 0
        and undelivered > 0
        and result.final_exit_code == 0
    )
    if result.missing:
        print(f"missing ids (first 10): {result.missing[:10]}")
    print(f"VERDICT kill9: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
