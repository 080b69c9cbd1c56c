"""kill -9 of a process writing under load, again and again: every record whose put returned is
present and decrypts; the file passes integrity_check."""

from __future__ import annotations

import os
import random
from pathlib import Path

from heatgate.agent.devtools.crash_writer import RETENTION_S, payload_for, run_and_kill
from heatgate.buffer.adapter import open_buffer
from tests.support.buffer import integrity
from tests.support.leaks import run_async

KEY = os.urandom(32)


def test_kill_9_under_load_loses_no_committed_record(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    rng = random.Random(1234)
    committed: set[str] = set()
    acked: set[str] = set()
    for _round in range(10):
        put, ack = run_and_kill(db, KEY, 200, rng)
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
