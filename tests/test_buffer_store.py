"""The buffer on real files: ordering, in-flight, restart, encryption at rest, tampering,
crypto-shredding by retention, purge and erasure, the state store."""

from __future__ import annotations

import asyncio
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.buffer.aead import RecordCipher, associated_data
from heatgate.buffer.epochs import default_epoch_s
from heatgate.buffer.store import Store
from heatgate.sodium import AuthenticationFailed
from tests.support.buffer import RETENTION_S, T0, Clock, data_keys, integrity, raw_bytes, records, sql
from tests.support.leaks import run_async

T = TypeVar("T")
KEY = bytes(range(32))


def with_buffer(
    db: Path, body: Callable[[AsyncBuffer], Awaitable[T]], *, clock: Clock | None = None, **options: Any
) -> T:
    options.setdefault("commit_interval_s", 0.02)

    async def main() -> T:
        buffer = await open_buffer(
            db,
            KEY,
            cap_bytes=int(options.pop("cap_bytes", 16 << 20)),
            retention_s=RETENTION_S,
            clock=clock or Clock(),
            **options,
        )
        try:
            return await body(buffer)
        finally:
            await buffer.close()

    return run_async(main())


def test_take_order_inflight_ack_release(tmp_path: Path) -> None:
    db = tmp_path / "b.db"

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(records("analytics", 3, created_s=T0 - 100, tag="a"))
        await buffer.put(records("telemetry", 3, created_s=T0, tag="t"))
        await buffer.put(records("service", 2, created_s=T0 + 50, tag="s"))
        first = await buffer.take(4)
        assert [r.stream for r in first] == ["service", "service", "telemetry", "telemetry"]
        assert first[2].created_s < first[3].created_s
        second = await buffer.take(10)
        assert [r.stream for r in second] == ["telemetry", "analytics", "analytics", "analytics"]
        assert not set(r.id for r in first) & set(r.id for r in second)
        assert await buffer.take(10) == [], "records in flight are never handed out twice"
        await buffer.ack([r.id for r in first])
        await buffer.release([r.id for r in second[:2]])
        again = await buffer.take(10)
        assert [r.id for r in again] == [r.id for r in second[:2]]
        assert await buffer.count() == 4
        assert await buffer.count("analytics") == 3
        stats = await buffer.stats()
        assert stats.streams["service"].published == 2
        assert stats.streams["telemetry"].published == 2
        assert stats.streams["telemetry"].queued == 1
        assert stats.streams["analytics"].oldest_created_s == pytest.approx(T0 - 100)

    with_buffer(db, body)


def test_exclude_streams_and_restart_redelivers_same_ids(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    put = records("telemetry", 5) + records("analytics", 5, created_s=T0 + 1)

    async def first(buffer: AsyncBuffer) -> list[str]:
        await buffer.put(put)
        taken = await buffer.take(100, exclude_streams=frozenset({"analytics"}))
        assert {r.stream for r in taken} == {"telemetry"}
        await buffer.ack([taken[0].id])
        return [r.id for r in taken]

    taken_ids = with_buffer(db, first)

    async def second(buffer: AsyncBuffer) -> None:
        again = await buffer.take(100)
        # Everything not acknowledged comes back after a restart, in flight or not, same ids and bodies.
        assert [r.id for r in again] == taken_ids[1:] + [r.id for r in put[5:]]
        assert {r.id: r.payload for r in again} == {r.id: r.payload for r in put if r.id != taken_ids[0]}

    with_buffer(db, second)


def test_put_with_interval_commits_and_retried_put_is_idempotent(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    batch = records("telemetry", 10)

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(batch)
        # put returned: the rows are committed, visible to another connection.
        assert sql(db, "SELECT count(*) FROM records")[0][0] == 10
        await buffer.put(batch)
        assert await buffer.count() == 10

    with_buffer(db, body, commit_interval_s=0.05)


@pytest.mark.parametrize("cipher", ["chacha20-poly1305", "aes-256-gcm"])
def test_canary_never_on_disk(tmp_path: Path, cipher: str) -> None:
    db = tmp_path / "b.db"
    canary = "SERIAL-CANARY-7Q2X9"
    batch = records("telemetry", 50, tag=canary) + records("service", 5, tag=canary)

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(batch)
        await buffer.set_state("consent", canary.encode())
        # Both the WAL (before a checkpoint) and the database file after it.
        assert canary.encode() not in raw_bytes(db)
        got = await buffer.take(100)
        assert all(canary.encode() in r.payload for r in got)
        assert await buffer.get_state("consent") == canary.encode()

    with_buffer(db, body, cipher=cipher)
    assert canary.encode() not in raw_bytes(db)
    assert canary.encode() not in db.read_bytes()
    columns = sql(db, "SELECT name FROM pragma_table_info('records')")
    names = [c[0] for c in columns]
    assert names == ["seq", "id", "stream", "route", "priority", "created_s", "epoch", "sealed", "form"]


def _tamper(db: Path, how: str) -> set[str]:
    """Alter the file behind the buffer's back; returns the ids that must fail."""
    rows = sql(db, "SELECT seq, id, sealed FROM records ORDER BY seq")
    (seq_a, id_a, sealed_a), (seq_b, id_b, sealed_b) = rows[0][:3], rows[1][:3]
    assert isinstance(sealed_a, bytes) and isinstance(sealed_b, bytes)
    if how == "flip":
        flipped = bytearray(sealed_a)
        flipped[20] ^= 0x01
        sql(db, "UPDATE records SET sealed = ? WHERE seq = ?", (bytes(flipped), seq_a))
        return {str(id_a)}
    if how == "swap":
        sql(db, "UPDATE records SET sealed = ? WHERE seq = ?", (sealed_b, seq_a))
        sql(db, "UPDATE records SET sealed = ? WHERE seq = ?", (sealed_a, seq_b))
        return {str(id_a), str(id_b)}
    if how == "move-stream":
        sql(db, "UPDATE records SET stream = 'analytics' WHERE seq = ?", (seq_a,))
        return {str(id_a)}
    if how == "move-route":
        sql(db, "UPDATE records SET route = 'analytics/x' WHERE seq = ?", (seq_a,))
        return {str(id_a)}
    if how == "form":  # a wire form read as a bare body would publish a record without its id
        sql(db, "UPDATE records SET form = 0 WHERE seq = ?", (seq_a,))
        return {str(id_a)}
    raise AssertionError(how)


@pytest.mark.parametrize("how", ["flip", "swap", "move-stream", "move-route", "form"])
def test_tampering_is_detected_counted_and_quarantined(tmp_path: Path, how: str) -> None:
    db = tmp_path / "b.db"
    batch = records("telemetry", 6)

    async def fill(buffer: AsyncBuffer) -> None:
        await buffer.put(batch)

    with_buffer(db, fill)
    bad = _tamper(db, how)

    async def check(buffer: AsyncBuffer) -> None:
        got = await buffer.take(100)
        assert {r.id for r in got} == {r.id for r in batch} - bad
        for record in got:
            assert record.payload == next(r.payload for r in batch if r.id == record.id)
        stats = await buffer.stats()
        failures = sum(s.auth_failures for s in stats.streams.values())
        assert failures == len(bad)
        assert await buffer.count() == len(batch) - len(bad)

    with_buffer(db, check)
    assert {str(r[0]) for r in sql(db, "SELECT id FROM quarantine")} == bad
    assert integrity(db) == "ok"


def test_tampered_wrapped_data_key_quarantines_its_rows(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with_buffer(db, lambda b: b.put(records("telemetry", 4)))
    sql(db, "UPDATE data_keys SET start_s = start_s - 1")  # key moved in time: unwrap must fail

    async def check(buffer: AsyncBuffer) -> None:
        assert await buffer.take(10) == []
        assert (await buffer.stats()).streams["telemetry"].auth_failures == 4

    with_buffer(db, check)


def test_retention_crypto_shreds_a_copy_taken_before(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    clock = Clock(T0)
    epoch_s = default_epoch_s(RETENTION_S["telemetry"])
    old = records("telemetry", 10, created_s=T0, tag="old")
    new = records("telemetry", 10, created_s=T0 + 3 * epoch_s, tag="new")
    copy = tmp_path / "copy.db"

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(old)
        await buffer.put(new)
        assert (await buffer.stats()).key_epochs["telemetry"] == 2
        # Nothing expires one epoch short of retention.
        clock.now_s = T0 + RETENTION_S["telemetry"] - epoch_s - 1
        assert await buffer.sweep() == {}
        assert await buffer.purge_stream("nothing-here") == 0  # commits and checkpoints
        shutil.copyfile(db, copy)
        assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
        clock.now_s = T0 + RETENTION_S["telemetry"]
        assert await buffer.sweep() == {"telemetry": 10}
        stats = await buffer.stats()
        assert stats.streams["telemetry"].expired == 10
        assert stats.key_epochs["telemetry"] == 1
        assert sorted(r.id for r in await buffer.export_all()) == sorted(r.id for r in new)

    with_buffer(db, body, clock=clock)
    # The copy still holds the old rows and their wrapped key; the current key store does not.
    old_epoch = sql(copy, "SELECT epoch FROM records WHERE id = ?", (old[0].id,))[0][0]
    assert sql(db, "SELECT count(*) FROM data_keys WHERE epoch = ?", (old_epoch,))[0][0] == 0
    (wrapped_old,) = sql(copy, "SELECT wrapped FROM data_keys WHERE epoch = ?", (old_epoch,))[0]
    assert isinstance(wrapped_old, bytes)
    assert wrapped_old not in raw_bytes(db), "secure_delete + TRUNCATE checkpoint: the wrapped key is gone"
    current_keys = data_keys(db, KEY)
    assert old_epoch not in current_keys
    for number, key in current_keys.items():  # no key left in the store opens an old row
        for rid, stream, route, priority, created_s, sealed, form in sql(
            copy,
            "SELECT id, stream, route, priority, created_s, sealed, form FROM records WHERE epoch = ?",
            (old_epoch,),
        ):
            ad = associated_data(
                str(rid), str(stream), str(route), int(priority), float(created_s), old_epoch, int(str(form))
            )
            with pytest.raises(AuthenticationFailed):
                RecordCipher("chacha20-poly1305", key).open(bytes(sealed), ad)
            assert number != old_epoch


def test_records_already_past_retention_are_never_stored(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    clock = Clock(T0)

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(records("telemetry", 3, created_s=T0 - RETENTION_S["telemetry"] - 86400))
        assert await buffer.count() == 0
        assert (await buffer.stats()).streams["telemetry"].expired == 3

    with_buffer(db, body, clock=clock)


def test_purge_and_erase_destroy_keys_and_rows(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    canary = b"PURGED-CANARY"

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(records("analytics", 30, tag="x"))
        await buffer.put(records("telemetry", 5))
        await buffer.put(records("service", 2))
        taken = await buffer.take(100)
        assert len(taken) == 37
        wrapped = sql(db, "SELECT wrapped FROM data_keys WHERE stream = 'analytics'")
        assert await buffer.purge_stream("analytics") == 30
        assert all(w[0] not in raw_bytes(db) for w in wrapped)
        stats = await buffer.stats()
        assert stats.streams["analytics"].purged == 30
        assert "analytics" not in stats.key_epochs
        await buffer.ack([r.id for r in taken])  # acks of purged ids are harmless
        assert await buffer.count() == 0
        await buffer.put(records("telemetry", 5, created_s=T0 + 10))
        await buffer.set_state("objection", canary)
        assert await buffer.erase_all() == 5
        assert (await buffer.stats()).key_epochs == {}
        assert await buffer.get_state("objection") == canary, "erasure keeps consent/objection state"
        await buffer.set_state("objection", None)
        assert await buffer.get_state("objection") is None

    with_buffer(db, body)
    assert sql(db, "SELECT count(*) FROM data_keys")[0][0] == 0
    assert integrity(db) == "ok"


def test_closed_buffer_refuses(tmp_path: Path) -> None:
    from heatgate.buffer.errors import BufferClosed

    async def main() -> None:
        buffer = await open_buffer(tmp_path / "b.db", KEY, cap_bytes=1 << 20, retention_s=RETENTION_S)
        await buffer.close()
        await buffer.close()
        with pytest.raises(BufferClosed):
            await buffer.take(1)

    run_async(main())


def test_database_and_key_modes(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    with_buffer(db, lambda b: b.put(records("service", 1)))
    assert os.stat(db).st_mode & 0o077 == 0


def test_take_never_hands_out_uncommitted_rows(tmp_path: Path) -> None:
    """The newest committed row is acked (deleted) and new rows are put in the same open
    transaction: a seq must not be reused, or take would return an uncommitted row."""
    db = tmp_path / "b.db"

    async def body(buffer: AsyncBuffer) -> None:
        first = records("telemetry", 2)
        await buffer.put(first)
        taken = await buffer.take(10)
        await buffer.ack([r.id for r in taken])
        loop = asyncio.get_running_loop()
        pending = loop.create_task(buffer.put(records("telemetry", 2, created_s=T0 + 1)), name="slow-put")
        await asyncio.sleep(0.05)
        assert not pending.done(), "the put waits for the commit interval"
        assert await buffer.take(10) == []
        await pending
        assert len(await buffer.take(10)) == 2

    with_buffer(db, body, commit_interval_s=0.5)


def test_integer_creation_time_survives_a_reopen(tmp_path: Path) -> None:
    """A record made with an int clock must still authenticate after SQLite hands back a float."""
    from heatgate.buffer.api import NewRecord

    db = tmp_path / "b.db"
    record = NewRecord(
        id="01M80000000000000000000001",
        stream="telemetry",
        route="telemetry",
        priority=2,
        created_s=int(T0),
        payload=b'{"v":1}',
    )

    async def put(buffer: AsyncBuffer) -> None:
        await buffer.put([record])

    async def read(buffer: AsyncBuffer) -> list[bytes]:
        return [r.payload for r in await buffer.export_all()]

    with_buffer(db, put)
    assert with_buffer(db, read) == [b'{"v":1}']


def test_eviction_reads_rows_in_pages_without_skipping_or_repeating(tmp_path: Path) -> None:
    """The store reads its rows for the eviction planner a page at a time (32, 128, 512, 1024
    rows), deleting between pages: 3000 rows of one creation time (all ties, so only the seq
    orders them) go oldest first, each once, and the counts add up."""
    db = tmp_path / "b.db"
    store = Store.open(
        db,
        KEY,
        cap_bytes=64 << 20,
        cipher="chacha20-poly1305",
        retention_s=RETENTION_S,
        epoch_s=None,
        protected_streams=frozenset({"service"}),
        clock=Clock(),
    )
    try:
        batch = [msgspec.structs.replace(r, created_s=T0) for r in records("telemetry", 3000, size=60)]
        store.put(batch)
        store.put(records("service", 10, created_s=T0 - 100))
        store.commit()
        seqs = [int(str(s)) for (s,) in store.conn.execute("SELECT seq FROM records WHERE stream = 'telemetry'")]
        row_bytes = int(store.conn.execute("SELECT max(length(sealed)) FROM records").fetchone()[0]) + 120
        deleted = store.evict(row_bytes * 2500 - 1)  # 2500 rows' worth
        store.commit()
        left = [int(str(s)) for (s,) in store.conn.execute("SELECT seq FROM records WHERE stream = 'telemetry'")]
        assert deleted == 2500
        assert left == sorted(seqs)[2500:], "the oldest (lowest seq among ties) go first, none twice"
        assert store.stats().streams["telemetry"].evicted == 2500
        assert store.count("service") == 10, "service stays while telemetry is left"
        assert store.evict(10**9) == 510  # everything, service last
        store.commit()
        stats = store.stats()
        assert (stats.streams["telemetry"].evicted, stats.streams["service"].evicted) == (3000, 10)
    finally:
        store.close()
