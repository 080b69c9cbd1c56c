"""A buffer writer under load to kill -9, for the crash test and ``bench.bench_buffer --kill-rounds``.

The child process puts records on three streams and acks half of what it takes, forever; it
prints ``P <id>`` after each put returned (committed) and ``A <id>`` just before acking it.
:func:`run_and_kill` starts it, kills it at a random moment and returns both sets of ids; what
was committed and not acked must still be in the database, with :func:`payload_for` as payload.

    python -m heatgate.agent.devtools.crash_writer DB KEYHEX COMMIT_INTERVAL_S
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.api import NewRecord
from heatgate.buffer.ids import new_id
from heatgate.errors import HeatgateError

__all__ = ["RETENTION_S", "WriterError", "integrity_check", "payload_for", "run_and_kill"]

PRIORITY = {"service": 0, "telemetry": 5, "analytics": 9}
ROUTE = {"service": "service/fault", "telemetry": "telemetry", "analytics": "analytics/heat-pump"}
RETENTION_S = {"service": 180 * 86400.0, "telemetry": 14 * 86400.0, "analytics": 730 * 86400.0}
"""The writer's retention per stream; open its database with the same to read it back."""
WRITER_MODULE = "heatgate.agent.devtools.crash_writer"
ID_LINE_CHARS = 28  # "P " + a 26-character record id


class WriterError(HeatgateError):
    """The writer did not run as expected (it died early or printed too little)."""

    def __init__(self, message: str, *, returncode: int | None, stderr_tail: str) -> None:
        super().__init__(f"{message} (exit {returncode}):\n{stderr_tail}")
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def payload_for(record_id: str) -> bytes:
    return f'{{"id":"{record_id}","v":{sum(map(ord, record_id))}}}'.encode().ljust(120, b" ")


async def main(db: Path, key: bytes, commit_interval_s: float) -> None:
    buffer = await open_buffer(
        db, key, cap_bytes=64 << 20, commit_interval_s=commit_interval_s, retention_s=RETENTION_S
    )
    out = sys.stdout
    rng = random.Random()

    async def producer(stream: str) -> None:
        while True:
            batch = [
                NewRecord(
                    id=(rid := new_id()),
                    stream=stream,
                    route=ROUTE[stream],
                    priority=PRIORITY[stream],
                    created_s=time.time(),
                    payload=payload_for(rid),
                )
                for _ in range(rng.randint(1, 50 if stream != "service" else 2))
            ]
            await buffer.put(batch)
            out.write("".join(f"P {r.id}\n" for r in batch))
            out.flush()

    async def publisher() -> None:
        while True:
            taken = await buffer.take(20)
            if not taken:
                await asyncio.sleep(0.01)
                continue
            half = len(taken) // 2
            # Announced before the ack: from here on the record may be gone (that is not a loss).
            out.write("".join(f"A {r.id}\n" for r in taken[:half]))
            out.flush()
            await buffer.ack([r.id for r in taken[:half]])
            await buffer.release([r.id for r in taken[half:]])

    async with asyncio.TaskGroup() as group:
        for stream in ("telemetry", "analytics", "service"):
            group.create_task(producer(stream), name=f"producer-{stream}")
        group.create_task(publisher(), name="publisher")


def integrity_check(db: Path) -> str:
    """SQLite's ``PRAGMA integrity_check`` of ``db``: ``"ok"`` or the first problem found."""
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def run_and_kill(db: Path, key: bytes, min_lines: int, rng: random.Random) -> tuple[set[str], set[str]]:
    """Start the writer on ``db``, kill -9 it at a random moment once it has printed at least
    ``min_lines`` lines; return the ids it committed and the ids it was about to ack."""
    errors = db.with_name("writer.stderr")
    with open(errors, "wb") as err_file:
        child = subprocess.Popen(
            [sys.executable, "-m", WRITER_MODULE, str(db), key.hex(), "0.05"],
            stdout=subprocess.PIPE,
            stderr=err_file,
        )
    assert child.stdout is not None
    seen: list[bytes] = []
    target = min_lines + rng.randint(0, min_lines)
    try:
        for raw in child.stdout:
            seen.append(raw)
            if len(seen) >= target:
                break
        time.sleep(rng.random() * 0.05)
    finally:
        child.send_signal(signal.SIGKILL)
        # Through the same buffered reader: communicate() would skip what it already buffered.
        rest = child.stdout.read()
        child.stdout.close()
        child.wait(timeout=30)
    stderr_tail = errors.read_bytes().decode(errors="replace")[-2000:]
    if child.returncode != -signal.SIGKILL:
        raise WriterError("the writer ended before it was killed", returncode=child.returncode, stderr_tail=stderr_tail)
    if len(seen) < target:
        raise WriterError(f"the writer printed {len(seen)} of {target} lines", returncode=None, stderr_tail=stderr_tail)
    put: set[str] = set()
    acked: set[str] = set()
    # What was printed before the kill (the part we read, and what was still in the pipe).
    for line in (b"".join(seen) + rest).decode(errors="replace").splitlines():
        if line.startswith("P ") and len(line) == ID_LINE_CHARS:
            put.add(line[2:])
        elif line.startswith("A ") and len(line) == ID_LINE_CHARS:
            acked.add(line[2:])
    return put, acked


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), float(sys.argv[3])))
