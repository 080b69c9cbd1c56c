"""The database schema, versioned by ``PRAGMA user_version`` with forward migrations.

Nothing is stored in clear but a record's id, stream, route, priority, creation time, key epoch,
the form of its plaintext and its nonce+ciphertext; data keys only wrapped; state values only encrypted.
"""

from __future__ import annotations

import sqlite3

from heatgate.buffer.errors import SchemaTooNew

__all__ = ["SCHEMA_VERSION", "migrate"]

_V1 = """
CREATE TABLE meta (name TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE data_keys (
    epoch INTEGER PRIMARY KEY AUTOINCREMENT,
    stream TEXT NOT NULL,
    start_s REAL NOT NULL,
    end_s REAL NOT NULL,
    cipher TEXT NOT NULL,
    wrapped BLOB NOT NULL
);
CREATE INDEX data_keys_window ON data_keys (stream, start_s);
CREATE TABLE records (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    stream TEXT NOT NULL,
    route TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_s REAL NOT NULL,
    epoch INTEGER NOT NULL,
    sealed BLOB NOT NULL
);
CREATE INDEX records_lane ON records (priority, created_s);
CREATE INDEX records_epoch ON records (epoch, created_s);
CREATE TABLE quarantine (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    stream TEXT NOT NULL,
    route TEXT NOT NULL,
    priority INTEGER NOT NULL,
    created_s REAL NOT NULL,
    epoch INTEGER NOT NULL,
    sealed BLOB NOT NULL,
    reason TEXT NOT NULL,
    quarantined_s REAL NOT NULL
);
CREATE TABLE counters (stream TEXT NOT NULL, name TEXT NOT NULL, value INTEGER NOT NULL,
                       PRIMARY KEY (stream, name)) WITHOUT ROWID;
CREATE TABLE state (name TEXT PRIMARY KEY, sealed BLOB NOT NULL) WITHOUT ROWID;
"""

_V2 = """
ALTER TABLE records ADD COLUMN form INTEGER NOT NULL DEFAULT 0;
ALTER TABLE quarantine ADD COLUMN form INTEGER NOT NULL DEFAULT 0;
"""
"""``form``: what a row's ciphertext holds. 0 (rows written before version 2): the record's
body; 1: its wire form ``{"id":…,"body":…}`` (:mod:`heatgate.buffer.wire`), bound into the
associated data (:func:`heatgate.buffer.aead.associated_data`). Old rows are read as they are."""

_MIGRATIONS: tuple[str, ...] = (_V1, _V2)
"""``_MIGRATIONS[n]`` takes a database from version n to n + 1. Append, never edit."""

SCHEMA_VERSION = len(_MIGRATIONS)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema up to date, each step in its own transaction; returns the old version."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        raise SchemaTooNew(version, SCHEMA_VERSION)
    for target in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in _MIGRATIONS[target - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return int(version)
