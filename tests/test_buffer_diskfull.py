"""A disk that someone else filled to the last byte, on a real tmpfs (the tests run as root).

The guarantees under test: service records are never evicted while another stream holds any
(pending records of the failed transaction included); a put either commits or raises, never
reports success for records that were not stored; a healthy database on a full disk is never
mistaken for a corrupt one.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.buffer.api import BufferStats
from heatgate.buffer.errors import BufferFault, RecordsNotStored
from heatgate.buffer.ids import IdGenerator
from tests.support.buffer import RETENTION_S, T0, Clock, integrity, records, sql
from tests.support.leaks import run_async
from tests.support.tmpfs import tmpfs

KEY = bytes(range(32))


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MiB tmpfs."""
    with tmpfs(tmp_path / "small", "1536k") as mount:
        yield mount


def _fill(path: Path, leave_bytes: int = 0) -> None:
    """Take every free byte of the file system (then give ``leave_bytes`` back)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == 28
    finally:
        os.close(fd)
    if leave_bytes:
        os.truncate(path, max(0, path.stat().st_size - leave_bytes))


async def _open(db: Path, commit_interval_s: float = 0.0) -> AsyncBuffer:
    # A cap far above the file system's size: only the disk can stop it.
    return await open_buffer(
        db, KEY, cap_bytes=64 << 20, commit_interval_s=commit_interval_s, retention_s=RETENTION_S, clock=Clock()
    )


def _by_stream(db: Path, table: str = "records") -> dict[str, int]:
    return {str(s): int(n) for s, n in sql(db, f"SELECT stream, count(*) FROM {table} GROUP BY stream")}


def _counter(db: Path, stream: str, name: str) -> int:
    rows = sql(db, "SELECT value FROM counters WHERE stream = ? AND name = ?", (stream, name))
    return int(rows[0][0]) if rows else 0


@pytest.mark.parametrize(
    ("trigger", "leave_kib"), [("fault", 0), ("fault", 64), ("fault", 128), ("close", 64), ("close", 128)]
)
def test_a_commit_on_a_full_disk_never_evicts_service_for_telemetry(
    small_fs: Path, trigger: str, leave_kib: int
) -> None:
    """Telemetry puts wait in the open transaction; another file fills the disk; then the
    transaction is committed, by a fault record (service commits at once) or by close() (the
    agent's stop). The recovery must make room from telemetry, committed or pending, never from
    the committed service records; what it cannot keep is counted, and a put reports success
    only for records that were stored or evicted by policy and counted."""
    db = small_fs / "b.db"
    filler = small_fs / "filler"
    ids = IdGenerator(lambda: T0)
    service = records("service", 6, size=300, ids=ids)
    fault = records("service", 1, created_s=T0 + 100, size=300, ids=ids)

    async def main() -> tuple[list[BaseException | None], BaseException | None, BufferStats | None]:
        seeding = await _open(db)
        await seeding.put(service)
        await seeding.put(records("telemetry", 20, created_s=T0 + 1, size=600, ids=ids))
        await seeding.close()
        buffer = await _open(db, commit_interval_s=3600.0)
        pending = [
            asyncio.ensure_future(buffer.put(records("telemetry", 40, created_s=T0 + 10 + i, size=600, ids=ids)))
            for i in range(6)
        ]
        await asyncio.sleep(0.2)  # the puts are in the open transaction, waiting for its commit
        _fill(filler, leave_kib * 1024)
        fault_outcome: BaseException | None = None
        stats = None
        if trigger == "fault":
            try:
                await buffer.put(fault)
            except RecordsNotStored as exc:
                fault_outcome = exc
            stats = await buffer.stats()
        await buffer.close()
        return [f.exception() for f in pending], fault_outcome, stats

    outcomes, fault_outcome, stats = run_async(main())
    assert outcomes == [None] * 6, "telemetry is evicted by policy and counted, not refused"
    fault_stored = fault_outcome is None and trigger == "fault"
    service_evicted = 0
    if stats is not None:  # what status shows while it runs
        telemetry = stats.streams["telemetry"]
        service_evicted = stats.streams["service"].evicted
        # The oldest fault may make room for the newest, one for one, once no telemetry is left.
        assert service_evicted <= len(fault)
        if service_evicted:
            assert telemetry.queued == 0
        assert stats.streams["service"].queued == len(service) + fault_stored - service_evicted
        assert stats.streams["service"].rejected == (1 if isinstance(fault_outcome, RecordsNotStored) else 0)
        assert telemetry.queued + telemetry.evicted == 20 + 6 * 40
        assert telemetry.evicted > 0 and "disk_full" in stats.alarms
    if isinstance(fault_outcome, RecordsNotStored):
        assert fault_outcome.ids == frozenset(r.id for r in fault)
    filler.unlink()  # reopening needs room for the -shm file
    held = _by_stream(db)
    assert held.get("service", 0) == len(service) + fault_stored - service_evicted, (held, fault_outcome)
    assert _counter(db, "service", "evicted") == service_evicted
    assert integrity(db) == "ok"
    if leave_kib:  # with a few KiB free, the counts reach the file too
        assert held.get("telemetry", 0) + _counter(db, "telemetry", "evicted") == 20 + 6 * 40
        assert _counter(db, "telemetry", "evicted") > 0


def test_a_put_that_cannot_be_stored_raises_and_is_counted(small_fs: Path) -> None:
    """Nothing evictable and not a byte free: the service put raises RecordsNotStored (with the
    ids), stats count it as rejected and raise an alarm; nothing pretends to be committed."""
    db = small_fs / "b.db"
    filler = small_fs / "filler"

    async def main() -> None:
        buffer = await _open(db)
        try:
            _fill(filler)
            batch = records("service", 30, size=2000)
            with pytest.raises(RecordsNotStored) as caught:
                await buffer.put(batch)
            assert caught.value.per_stream == {"service": 30}
            assert caught.value.ids == frozenset(r.id for r in batch)
            stats = await buffer.stats()
            assert stats.streams["service"].rejected == 30
            assert stats.streams["service"].queued == 0
            assert stats.streams["service"].evicted == 0
            assert "disk_full_records_rejected" in stats.alarms
            assert await buffer.export_all() == []
            # Space back: the next put commits, and the rejection count survives in the file.
            filler.unlink()
            again = records("service", 2, created_s=T0 + 5)
            await buffer.put(again)
            assert {r.id for r in again} <= {r.id for r in await buffer.export_all()}
        finally:
            await buffer.close()

    run_async(main())
    assert _counter(db, "service", "rejected") == 30
    assert integrity(db) == "ok"


def test_a_healthy_database_on_a_full_disk_is_not_quarantined(small_fs: Path) -> None:
    """Opening needs a few KiB (the -shm file). On a full disk that fails with an I/O error,
    which is not corruption: open raises a BufferFault, the file stays where it is, untouched,
    and opens normally once there is room."""
    db = small_fs / "b.db"
    filler = small_fs / "filler"
    kept = records("service", 6, size=300)

    async def fill() -> None:
        buffer = await _open(db)
        await buffer.put(kept)
        await buffer.put(records("telemetry", 40, created_s=T0 + 1, size=300))
        await buffer.close()

    run_async(fill())
    before = db.read_bytes()
    _fill(filler)
    with pytest.raises(BufferFault, match=r"full|I/O"):
        run_async(_open(db))
    # (b.db-turnstile, the empty lock file of buffer/turnstile.py, is not a database file)
    assert sorted(
        p.name for p in small_fs.iterdir() if p.name.startswith("b.db") and not p.name.endswith("-turnstile")
    ) in (["b.db"], ["b.db", "b.db-shm"], ["b.db", "b.db-shm", "b.db-wal"], ["b.db", "b.db-wal"])
    assert db.read_bytes() == before
    filler.unlink()

    async def reopen() -> tuple[list[str], set[str]]:
        buffer = await _open(db)
        try:
            return (await buffer.stats()).alarms, {r.id for r in await buffer.export_all()}
        finally:
            await buffer.close()

    alarms, exported = run_async(reopen())
    assert not any(a.startswith("corrupt_db_quarantined") for a in alarms)
    assert {r.id for r in kept} <= exported and len(exported) == 46
