"""Master key files, systemd credentials, and the key-check value against a wrong key."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.errors import MasterKeyFileError, MasterKeyMismatch
from heatgate.buffer.keys import create_master_key, load_master_key
from tests.support.buffer import RETENTION_S, T0, Clock, records, sql
from tests.support.leaks import run_async


def test_create_then_load(tmp_path: Path) -> None:
    key_path = tmp_path / "keys" / "master.key"
    assert create_master_key(key_path) is True
    assert key_path.stat().st_mode & 0o777 == 0o600
    assert key_path.parent.stat().st_mode & 0o777 == 0o700
    key = load_master_key(key_path)
    assert len(key) == 32
    assert create_master_key(key_path) is False, "an existing key must never be overwritten without force"
    assert load_master_key(key_path) == key
    assert create_master_key(key_path, force=True) is True
    assert load_master_key(key_path) != key


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644])
def test_key_readable_by_others_is_refused(tmp_path: Path, mode: int) -> None:
    key_path = tmp_path / "master.key"
    create_master_key(key_path)
    os.chmod(key_path, mode)
    with pytest.raises(MasterKeyFileError) as caught:
        load_master_key(key_path)
    assert caught.value.path == key_path
    assert "chmod 600" in caught.value.reason


def test_key_file_problems_are_located(tmp_path: Path) -> None:
    with pytest.raises(MasterKeyFileError, match="does not exist"):
        load_master_key(tmp_path / "missing.key")
    short = tmp_path / "short.key"
    short.write_bytes(b"abc")
    os.chmod(short, 0o600)
    with pytest.raises(MasterKeyFileError, match="32 raw bytes or 64 hex"):
        load_master_key(short)
    raw = tmp_path / "raw.key"
    raw.write_bytes(bytes(range(32)))
    os.chmod(raw, 0o600)
    assert load_master_key(raw) == bytes(range(32))
    link = tmp_path / "link.key"
    link.symlink_to(raw)
    with pytest.raises(MasterKeyFileError, match="cannot be opened"):
        load_master_key(link)


def test_systemd_credential_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    creds = tmp_path / "creds"
    creds.mkdir()
    (creds / "heatgate-master-key").write_text("11" * 32 + "\n")
    file_key = tmp_path / "master.key"
    create_master_key(file_key)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(creds))
    assert load_master_key(file_key, "heatgate-master-key") == bytes([0x11]) * 32
    assert load_master_key(file_key) == load_master_key(file_key, None) != bytes([0x11]) * 32
    monkeypatch.delenv("CREDENTIALS_DIRECTORY")
    assert load_master_key(file_key, "heatgate-master-key") != bytes([0x11]) * 32


def test_wrong_master_key_leaves_database_untouched(tmp_path: Path) -> None:
    db = tmp_path / "buffer.db"
    key = os.urandom(32)

    async def fill() -> None:
        buffer = await open_buffer(db, key, cap_bytes=8 << 20, retention_s=RETENTION_S, clock=Clock())
        await buffer.put(records("telemetry", 20, created_s=T0))
        await buffer.close()

    run_async(fill())
    digest = hashlib.sha256(db.read_bytes()).hexdigest()
    rows_before = sql(db, "SELECT id, sealed FROM records ORDER BY id")

    async def reopen_wrong() -> None:
        await open_buffer(db, os.urandom(32), cap_bytes=8 << 20, retention_s=RETENTION_S, clock=Clock())

    with pytest.raises(MasterKeyMismatch, match="does not match") as caught:
        run_async(reopen_wrong())
    assert caught.value.db_path == db
    assert hashlib.sha256(db.read_bytes()).hexdigest() == digest
    assert sql(db, "SELECT id, sealed FROM records ORDER BY id") == rows_before

    async def reopen_right() -> int:
        buffer = await open_buffer(db, key, cap_bytes=8 << 20, retention_s=RETENTION_S, clock=Clock())
        try:
            return len(await buffer.export_all())
        finally:
            await buffer.close()

    assert run_async(reopen_right()) == 20
