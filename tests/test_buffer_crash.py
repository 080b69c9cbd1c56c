"""kill -9 of a process writing under load, again and again: every record whose put returned is
present and decrypts; the file passes integrity_check."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from heatgate.buffer.adapter import open_buffer
from tests.buffer_support import RETENTION_S, integrity
from tests.buffer_support.writer import payload_for
from tests.support.leaks import run_async

KEY = os.urandom(32)
ROOT = Path(__file__).resolve().parent.parent


def run_and_kill(db: Path, min_lines: int, rng: random.Random) -> tuple[set[str], set[str]]:
    """Start the writer, kill -9 it at a random moment once it has committed a while."""
    errors = db.with_name("writer.stderr")
    with open(errors, "wb") as err_file:
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.buffer_support.writer", str(db), KEY.hex(), "0.05"],
            cwd=ROOT,
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
    err = errors.read_bytes()
    assert child.returncode == -signal.SIGKILL, err.decode()[-2000:]
    put: set[str] = set()
    acked: set[str] = set()
    # What was printed before the kill (the part we read, and what was still in the pipe).
    text = (b"".join(seen) + rest).decode(errors="replace")
    assert len(seen) >= target, err.decode()[-2000:]
    for line in text.splitlines():
        if line.startswith("P ") and len(line) == 28:
            put.add(line[2:])
        elif line.startswith("A ") and len(line) == 28:
            acked.add(line[2:])
    return put, acked


def test_kill_9_under_load_loses_no_committed_record(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    rng = random.Random(1234)
    committed: set[str] = set()
    acked: set[str] = set()
    for _round in range(10):
        put, ack = run_and_kill(db, 200, rng)
        committed |= put
        acked |= ack
        assert integrity(db) == "ok"

        async def check() -> dict[str, bytes]:
            buffer = await open_buffer(db, KEY, cap_bytes=64 << 20, retention_s=RETENTION_S)
            try:
                return {r.id: r.payload for r in await buffer.export_all()}
            finally:
                await buffer.close()

        stored = run_async(check())
        missing = committed - acked - stored.keys()
        assert not missing, f"{len(missing)} committed records lost after kill -9, e.g. {sorted(missing)[:3]}"
        for rid, payload in stored.items():
            assert payload == payload_for(rid)
    assert len(committed) > 1000
