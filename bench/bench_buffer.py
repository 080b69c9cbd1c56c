"""Buffer benchmarks: ingest vs raw sqlite-utils, take+decrypt+ack, bytes written per record,
RSS against the backlog. Prints figures; asserts nothing.

    .venv/bin/python -m bench.bench_buffer                      # quick (seconds)
    .venv/bin/python -m bench.bench_buffer --records 100000 --backlog 1000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

import sqlite_utils

from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.api import NewRecord
from heatgate.buffer.ids import IdGenerator
from heatgate.buffer.store import Store

KEY = os.urandom(32)
RETENTION_S = {"telemetry": 14 * 86400.0, "service": 180 * 86400.0}
BATCH = 500


def make(count: int, gen: IdGenerator, now_s: float) -> list[NewRecord]:
    out = []
    for i in range(count):
        rid = gen.new()
        body = f'{{"v":1,"id":"{rid}","t":{now_s:.0f},"flow_c":{35 + i % 10}.5,"ret_c":30.1,"power_w":{i % 4000}}}'
        out.append(
            NewRecord(
                id=rid,
                stream="telemetry",
                route="telemetry",
                priority=5,
                created_s=now_s + i * 1e-4,
                payload=body.encode(),
            )
        )
    return out


def rss_mib() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def wchar() -> int:
    with open("/proc/self/io") as handle:
        for line in handle:
            if line.startswith("wchar:"):
                return int(line.split()[1])
    return 0


def bench_ingest(tmp: Path, count: int, cipher: str) -> tuple[float, float]:
    records = make(count, IdGenerator(), time.time())
    # Baseline: the same rows, plaintext, through sqlite-utils insert_all, WAL + synchronous=NORMAL.
    raw = sqlite_utils.Database(tmp / f"raw-{cipher}.db")
    raw.execute("PRAGMA journal_mode = WAL").fetchone()
    raw.execute("PRAGMA synchronous = NORMAL")
    rows = [
        {
            "id": r.id,
            "stream": r.stream,
            "route": r.route,
            "priority": r.priority,
            "created_s": r.created_s,
            "payload": r.payload,
        }
        for r in records
    ]
    start = time.perf_counter()
    raw["records"].insert_all(rows, batch_size=BATCH, pk="id")  # type: ignore[union-attr]
    raw_s = time.perf_counter() - start
    raw.close()
    store = Store.open(
        tmp / f"enc-{cipher}.db",
        KEY,
        cap_bytes=1 << 30,
        cipher=cipher,
        retention_s=RETENTION_S,
        epoch_s=None,
        protected_streams=frozenset({"service"}),
        clock=time.time,
    )
    start = time.perf_counter()
    for i in range(0, count, BATCH):
        store.put(records[i : i + BATCH])
        store.commit()
    enc_s = time.perf_counter() - start
    store.close()
    return count / enc_s, count / raw_s


async def bench_take(tmp: Path, count: int) -> float:
    buffer = await open_buffer(tmp / "take.db", KEY, cap_bytes=1 << 30, commit_interval_s=0, retention_s=RETENTION_S)
    records = make(count, IdGenerator(), time.time())
    for i in range(0, count, BATCH):
        await buffer.put(records[i : i + BATCH])
    start = time.perf_counter()
    done = 0
    while True:
        taken = await buffer.take(BATCH)
        if not taken:
            break
        await buffer.ack([r.id for r in taken])
        done += len(taken)
    elapsed = time.perf_counter() - start
    await buffer.close()
    return done / elapsed


async def bench_bytes_per_record(tmp: Path, seconds: float, producers: int) -> tuple[float, int]:
    """``producers`` concurrent pipelines each putting 10 records at a time (each put waits for
    its commit), at the default 1 s commit interval."""
    buffer = await open_buffer(tmp / "wear.db", KEY, cap_bytes=1 << 30, retention_s=RETENTION_S)
    gen = IdGenerator()
    await buffer.put(make(10, gen, time.time()))
    before = wchar()
    total = 0
    end = time.monotonic() + seconds

    async def producer() -> None:
        nonlocal total
        while time.monotonic() < end:
            await buffer.put(make(10, gen, time.time()))
            total += 10

    await asyncio.gather(*(producer() for _ in range(producers)))
    await buffer.close()  # includes the final checkpoint
    return (wchar() - before) / total, total


async def bench_rss(tmp: Path, backlog: int) -> list[tuple[int, float]]:
    buffer = await open_buffer(tmp / "rss.db", KEY, cap_bytes=1 << 34, commit_interval_s=0, retention_s=RETENTION_S)
    gen = IdGenerator()
    marks = sorted({backlog // 10, backlog // 2, backlog})
    out = []
    stored = 0
    chunk = 5000
    for mark in marks:
        while stored < mark:
            await buffer.put(make(min(chunk, mark - stored), gen, time.time()))
            stored = min(mark, stored + chunk)
        # A publishing cycle and stats at this backlog, then RSS.
        taken = await buffer.take(BATCH)
        await buffer.release([r.id for r in taken])
        await buffer.stats()
        out.append((stored, rss_mib()))
    await buffer.close()
    return out


def kill_rounds(rounds: int) -> None:
    import random

    from heatgate.agent.devtools.crash_writer import RETENTION_S as WRITER_RETENTION_S
    from heatgate.agent.devtools.crash_writer import integrity_check, run_and_kill

    rng = random.Random()
    with tempfile.TemporaryDirectory(prefix="bench-buffer-kill-") as name:
        db = Path(name) / "buffer.db"
        committed: set[str] = set()
        acked: set[str] = set()
        lost = 0
        start = time.perf_counter()
        for done in range(1, rounds + 1):
            put, ack = run_and_kill(db, KEY, 200, rng)
            committed |= put
            acked |= ack
            ok = integrity_check(db)

            async def stored_ids() -> set[str]:
                buffer = await open_buffer(db, KEY, cap_bytes=64 << 20, retention_s=WRITER_RETENTION_S)
                try:
                    return {r.id for r in await buffer.export_all()}
                finally:
                    await buffer.close()

            lost = len(committed - acked - asyncio.run(stored_ids()))
            print(f"round {done}: integrity {ok}, committed so far {len(committed)}, lost {lost}")
        print(
            f"kill -9 x{rounds}: {len(committed)} committed records, {lost} lost, {time.perf_counter() - start:.0f} s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=20000, help="records for ingest and take (default 20000)")
    parser.add_argument("--backlog", type=int, default=100000, help="backlog for the RSS figure (default 100000)")
    parser.add_argument("--wear-seconds", type=float, default=5.0)
    parser.add_argument(
        "--kill-rounds",
        type=int,
        default=0,
        help="also kill -9 a writer under load this many times and count lost records",
    )
    args = parser.parse_args()
    if args.kill_rounds:
        kill_rounds(args.kill_rounds)
        return
    print(
        f"machine: {platform.machine()} {platform.processor() or ''} {os.cpu_count()} cpu, "
        f"python {platform.python_version()}, sqlite {__import__('sqlite3').sqlite_version}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-buffer-") as name:
        tmp = Path(name)
        for cipher in ("chacha20-poly1305", "aes-256-gcm"):
            # Interleaved, best of 3 each: the machine is shared, one run alone is noisy.
            runs = []
            for attempt in range(3):
                sub = tmp / f"ingest-{cipher}-{attempt}"
                sub.mkdir()
                runs.append(bench_ingest(sub, args.records, cipher))
            enc, raw = max(r[0] for r in runs), max(r[1] for r in runs)
            print(
                f"ingest {cipher}: {enc:,.0f} rec/s encrypted+committed vs {raw:,.0f} rec/s raw sqlite-utils "
                f"insert_all -> ratio {enc / raw:.2f} (target >= 0.5)"
            )
        print(f"take+decrypt+ack: {asyncio.run(bench_take(tmp, args.records)):,.0f} rec/s")
        for producers in (1, 20):
            per_record, total = asyncio.run(bench_bytes_per_record(tmp, args.wear_seconds, producers))
            print(
                f"bytes written per record (commit_interval_s=1.0, {producers} producer(s) of 10-record puts, "
                f"{total / args.wear_seconds:,.0f} rec/s, ~110 B payloads, wchar incl. WAL + checkpoint): "
                f"{per_record:,.0f} B"
            )
        for stored, rss in asyncio.run(bench_rss(tmp, args.backlog)):
            print(f"RSS with a backlog of {stored:>9,} records: {rss:6.1f} MiB")
        print(f"max RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.1f} MiB")


if __name__ == "__main__":
    main()
