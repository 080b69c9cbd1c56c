"""The buffer stores each record's wire form (``{"id":…,"body":…}``) and reads databases
written before it did (schema version 1: the body alone under the old associated data)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from heatgate.agent.publish.packing import pack
from heatgate.buffer.adapter import AsyncBuffer
from heatgate.buffer.aead import RecordCipher, associated_data
from heatgate.buffer.schema import SCHEMA_VERSION
from heatgate.buffer.wire import body_of, wire_form
from tests.support.buffer import data_keys, integrity, records, sql
from tests.test_buffer_store import KEY, with_buffer


def _v1_associated_data(rid: str, stream: str, route: str, priority: int, created_s: float, epoch: int) -> bytes:
    """The associated data as version 1 wrote it, spelled out here (not taken from the code under test)."""
    return msgspec.msgpack.encode((1, rid, stream, route, priority, float(created_s), epoch))


def _downgrade_to_v1(db: Path) -> None:
    """Rewrite a current database as version 1 wrote it: bodies sealed alone, no ``form`` column."""
    keys = data_keys(db, KEY)
    rows = sql(db, "SELECT seq, id, stream, route, priority, created_s, epoch, sealed, form FROM records")
    assert rows and all(row[8] == 1 for row in rows)
    for seq, rid, stream, route, priority, created_s, epoch, sealed, form in rows:
        cipher = RecordCipher("chacha20-poly1305", keys[int(epoch)])
        ad = associated_data(str(rid), str(stream), str(route), int(priority), float(created_s), int(epoch), int(form))
        wire = cipher.open(bytes(sealed), ad)
        body = body_of(str(rid), wire)
        old_ad = _v1_associated_data(str(rid), str(stream), str(route), int(priority), float(created_s), int(epoch))
        sql(db, "UPDATE records SET sealed = ? WHERE seq = ?", (cipher.seal(body, old_ad), seq))
    sql(db, "ALTER TABLE records DROP COLUMN form")
    sql(db, "ALTER TABLE quarantine DROP COLUMN form")
    sql(db, "PRAGMA user_version = 1")


def test_new_rows_hold_the_wire_form_and_hand_it_out(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    batch = records("telemetry", 5)

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(batch)
        got = await buffer.take(10)
        assert [r.id for r in got] == [r.id for r in batch]
        for record, new in zip(got, batch, strict=True):
            assert record.payload == new.payload
            assert record.wire == wire_form(new.id, new.payload)
        exported = await buffer.export_all()
        assert [r.payload for r in exported] == [r.payload for r in batch]

    with_buffer(db, body)
    assert {row[0] for row in sql(db, "SELECT form FROM records")} == {1}


def test_a_version_1_database_is_migrated_and_its_rows_still_publish(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    old = records("telemetry", 4, tag="old")
    with_buffer(db, lambda b: b.put(old))
    _downgrade_to_v1(db)
    new = records("telemetry", 3, created_s=old[-1].created_s + 1, tag="new")

    async def body(buffer: AsyncBuffer) -> None:
        await buffer.put(new)
        got = await buffer.take(10)
        assert [r.id for r in got] == [r.id for r in old + new]
        assert [r.payload for r in got] == [r.payload for r in old + new]
        assert [r.wire is None for r in got] == [True] * len(old) + [False] * len(new)
        assert (await buffer.stats()).streams["telemetry"].auth_failures == 0
        (message,) = pack(got, prefix="hg/v1", gateway_id="gw-1", max_payload_bytes=65536, sent_at="t")
        assert json.loads(message.payload)["records"] == [
            {"id": r.id, "body": json.loads(r.payload)} for r in old + new
        ]
        await buffer.ack([r.id for r in got])

    with_buffer(db, body)
    assert sql(db, "PRAGMA user_version")[0][0] == SCHEMA_VERSION == 2
    assert sql(db, "SELECT count(*) FROM records")[0][0] == 0
    assert integrity(db) == "ok"


def test_take_batch_makes_the_wire_form_of_rows_that_hold_only_the_body(tmp_path: Path) -> None:
    db = tmp_path / "b.db"
    old = records("telemetry", 3, tag="old")
    with_buffer(db, lambda b: b.put(old))
    _downgrade_to_v1(db)

    async def body(buffer: AsyncBuffer) -> None:
        taken = await buffer.take_batch(10)
        assert taken.ids == [r.id for r in old]
        assert taken.wires == [wire_form(r.id, r.payload) for r in old]

    with_buffer(db, body)
