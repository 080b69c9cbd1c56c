"""Helpers for the buffer tests: records, a controllable clock, raw file access."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from heatgate.buffer.api import NewRecord
from heatgate.buffer.batch import TakenBatch
from heatgate.buffer.data_keys import key_ad
from heatgate.buffer.ids import IdGenerator
from heatgate.buffer.keys import DerivedKeys

PRIORITY = {"service": 0, "telemetry": 5, "analytics": 9, "connectivity": 7}
ROUTE = {
    "service": "service/fault",
    "telemetry": "telemetry",
    "analytics": "analytics/heat-pump",
    "connectivity": "telemetry/connectivity",
}
RETENTION_S = {
    "service": 180 * 86400.0,
    "telemetry": 14 * 86400.0,
    "analytics": 730 * 86400.0,
    "connectivity": 14 * 86400.0,
}
T0 = 1_750_000_000.0


class Clock:
    """A settable clock (seconds since the epoch)."""

    def __init__(self, now_s: float = T0) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        return self.now_s


def records(
    stream: str, count: int, *, created_s: float = T0, size: int = 40, ids: IdGenerator | None = None, tag: str = ""
) -> list[NewRecord]:
    gen = ids or IdGenerator(lambda: created_s)
    out = []
    for i in range(count):
        rid = gen.new()
        body = f'{{"n":{i},"tag":"{tag}","id":"{rid}"}}'.encode()
        out.append(
            NewRecord(
                id=rid,
                stream=stream,
                route=ROUTE[stream],
                priority=PRIORITY[stream],
                created_s=created_s + i * 1e-3,
                payload=body.ljust(size, b" "),
            )
        )
    return out


def raw_bytes(db: Path) -> bytes:
    """The database file and its WAL, as stored."""
    data = b""
    for suffix in ("", "-wal"):
        side = Path(f"{db}{suffix}")
        if side.exists():
            data += side.read_bytes()
    return data


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def sql(db: Path, statement: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """The rows of one statement on its own connection (columns as SQLite returns them: untyped)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()


def data_keys(db: Path, master_key: bytes) -> dict[int, bytes]:
    """Every data key in the file, unwrapped with the master key: epoch -> key."""
    (salt,) = sql(db, "SELECT value FROM meta WHERE name = 'salt'")[0]
    keys = DerivedKeys(master_key, bytes(salt))
    out = {}
    for number, stream, start_s, end_s, cipher, wrapped in sql(
        db, "SELECT epoch, stream, start_s, end_s, cipher, wrapped FROM data_keys"
    ):
        out[int(number)] = keys.unwrap(
            bytes(wrapped), key_ad(int(number), str(stream), float(start_s), float(end_s), str(cipher))
        )
    return out


def columns_of(batch: TakenBatch) -> list[tuple[str, str, str]]:
    """Each record of a batch as ``(id, stream, route)``, once the columns are checked to agree:
    one wire form and one running size per id, runs that cover the batch, each a new route."""
    assert len(batch.wires) == len(batch.ids) == len(batch.offsets) - 1
    sizes = [after - before for before, after in zip(batch.offsets, batch.offsets[1:], strict=False)]
    assert sizes == [len(wire) + 1 for wire in batch.wires]
    out: list[tuple[str, str, str]] = []
    start, previous = 0, None
    for stream, route, end in batch.runs:
        assert end > start, "runs are never empty"
        assert (stream, route) != previous, "a run ends where the stream or the route changes"
        out.extend((batch.ids[i], stream, route) for i in range(start, end))
        start, previous = end, (stream, route)
    assert start == len(batch.ids)
    return out
