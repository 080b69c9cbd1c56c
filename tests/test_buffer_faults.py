"""Byte cap and eviction order, a full file system, a corrupt file at start."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.buffer.errors import RecordsNotStored
from heatgate.buffer.ids import IdGenerator
from tests.support.buffer import RETENTION_S, T0, Clock, integrity, records, sql
from tests.support.leaks import run_async
from tests.support.tmpfs import tmpfs

KEY = bytes(range(32))
CAP = 1 << 20


async def _open(db: Path, cap_bytes: int = CAP) -> AsyncBuffer:
    return await open_buffer(
        db, KEY, cap_bytes=cap_bytes, commit_interval_s=0.0, retention_s=RETENTION_S, clock=Clock()
    )


def test_cap_evicts_lowest_priority_oldest_first_never_service(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    ids = IdGenerator(lambda: T0)

    async def main() -> None:
        buffer = await _open(db)
        try:
            service = records("service", 100, size=600, ids=ids)
            await buffer.put(service)
            analytics = []
            for i in range(8):
                batch = records("analytics", 50, created_s=T0 + i, size=600, ids=ids)
                analytics += batch
                await buffer.put(batch)
                assert (await buffer.stats()).file_bytes <= CAP
            telemetry = []
            for i in range(20):
                batch = records("telemetry", 50, created_s=T0 + 100 + i, size=600, ids=ids)
                telemetry += batch
                await buffer.put(batch)
                stats = await buffer.stats()
                assert stats.file_bytes <= CAP
                if stats.streams["telemetry"].evicted:
                    assert stats.streams["analytics"].queued == 0, "analytics (priority 9) goes before telemetry"
            stats = await buffer.stats()
            assert stats.streams["analytics"].evicted == 400
            assert stats.streams["telemetry"].evicted > 0
            assert stats.streams["service"].evicted == 0
            assert stats.streams["service"].queued == 100
            assert "over_cap_evicting" in stats.alarms
            kept = [r.id for r in await buffer.export_all() if r.stream == "telemetry"]
            assert kept == [r.id for r in telemetry[-len(kept) :]], "oldest evicted first"
            assert len(kept) + stats.streams["telemetry"].evicted == len(telemetry)
            # With only service left, a stored service row is never evicted for a new one (it
            # may be the only record of its point's latest state): the new ones are refused, the
            # put raises with their ids, and the agent coalesces them (eviction.py, rule 4).
            await buffer.purge_stream("telemetry")
            refused: set[str] = set()
            for i in range(30):
                batch = records("service", 50, created_s=T0 + 1000 + i, size=600, ids=ids)
                try:
                    await buffer.put(batch)
                except RecordsNotStored as exc:
                    assert exc.ids <= {r.id for r in batch}
                    refused |= exc.ids
            stats = await buffer.stats()
            assert stats.file_bytes <= CAP
            assert stats.streams["service"].evicted == 0
            assert refused and stats.streams["service"].rejected == len(refused)
            remaining = {r.id for r in await buffer.export_all()}
            assert {r.id for r in service} <= remaining
            assert not refused & remaining
        finally:
            await buffer.close()

    run_async(main())
    assert integrity(db) == "ok"


def test_lower_cap_at_restart_shrinks_the_file(tmp_path: Path) -> None:
    db = tmp_path / "b.db"

    async def main() -> None:
        buffer = await _open(db, cap_bytes=4 << 20)
        for i in range(10):
            await buffer.put(records("telemetry", 200, created_s=T0 + i, size=1000))
        await buffer.close()
        assert db.stat().st_size > 1 << 20
        buffer = await _open(db, cap_bytes=1 << 20)
        await buffer.put(records("telemetry", 1, created_s=T0 + 50))
        stats = await buffer.stats()
        await buffer.close()
        assert stats.file_bytes <= 1 << 20
        assert stats.streams["telemetry"].evicted > 0

    run_async(main())


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 1.5 MiB tmpfs (we are root in CI and here)."""
    with tmpfs(tmp_path / "small", "1536k") as mount:
        yield mount


def test_full_disk_evicts_and_alarms_without_crashing(small_fs: Path) -> None:
    db = small_fs / "b.db"
    ids = IdGenerator(lambda: T0)

    async def main() -> None:
        # A cap far above the file system's size: only the disk can stop it.
        buffer = await _open(db, cap_bytes=64 << 20)
        alarms_seen: set[str] = set()
        try:
            service = records("service", 20, size=600, ids=ids)
            await buffer.put(service)
            for i in range(60):
                await buffer.put(records("telemetry", 40, created_s=T0 + i, size=600, ids=ids))
                alarms_seen.update((await buffer.stats()).alarms)
            stats = await buffer.stats()
            assert "disk_full" in alarms_seen
            assert stats.streams["telemetry"].evicted > 0
            assert stats.streams["service"].evicted == 0
            kept = {r.id for r in await buffer.export_all()}
            assert {r.id for r in service} <= kept
            newest = records("telemetry", 5, created_s=T0 + 999, size=600, ids=ids)
            await buffer.put(newest)
            assert {r.id for r in newest} <= {r.id for r in await buffer.export_all()}
        finally:
            await buffer.close()

    run_async(main())
    assert integrity(db) == "ok"


def test_disk_filled_by_someone_else_never_crashes(small_fs: Path) -> None:
    """Another file takes every free byte: SQLite itself reports SQLITE_FULL. Puts neither raise
    nor corrupt anything; what cannot be stored is counted; once space is back, all is well."""
    db = small_fs / "b.db"
    filler = small_fs / "filler"

    async def main() -> None:
        buffer = await _open(db, cap_bytes=64 << 20)
        try:
            await buffer.put(records("service", 10, size=600))
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
            try:
                while os.write(fd, b"\0" * 4096):
                    pass
            except OSError as exc:
                assert exc.errno == 28
            finally:
                os.close(fd)
            for i in range(20):
                await buffer.put(records("telemetry", 40, created_s=T0 + i, size=600))
            stats = await buffer.stats()
            assert "disk_full" in stats.alarms
            assert stats.streams["telemetry"].evicted > 0
            filler.unlink()
            fresh = records("telemetry", 3, created_s=T0 + 500)
            await buffer.put(fresh)
            assert {r.id for r in fresh} <= {r.id for r in await buffer.export_all()}
        finally:
            await buffer.close()

    run_async(main())
    assert integrity(db) == "ok"


@pytest.mark.parametrize("damage", ["garbage", "truncated-page"])
def test_corrupt_file_is_quarantined_and_a_fresh_one_started(tmp_path: Path, damage: str) -> None:
    db = tmp_path / "b.db"

    async def fill() -> None:
        buffer = await _open(db)
        await buffer.put(records("telemetry", 300, size=500))
        await buffer.close()

    if damage == "garbage":
        db.write_bytes(os.urandom(8192))
    else:
        run_async(fill())
        data = bytearray(db.read_bytes())
        data[4096 * 2 : 4096 * 2 + 64] = b"\xff" * 64  # smash a b-tree page header
        db.write_bytes(bytes(data))
    original = db.read_bytes()

    async def reopen() -> list[str]:
        buffer = await _open(db)
        try:
            await buffer.put(records("service", 2, created_s=T0 + 5))
            assert await buffer.count() == 2
            return (await buffer.stats()).alarms
        finally:
            await buffer.close()

    alarms = run_async(reopen())
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("b.db.corrupt-")]
    assert len(aside) == 1
    assert aside[0].read_bytes() == original, "the corrupt file is kept as it was, for inspection"
    assert alarms == [f"corrupt_db_quarantined:{aside[0].name}"]
    assert integrity(db) == "ok"
    assert sql(db, "SELECT count(*) FROM records")[0][0] == 2
