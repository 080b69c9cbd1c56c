"""Opening the buffer's SQLite file: modes, pragmas, busy timeout, the turnstile, the master-key
check, and the quarantine of a corrupt file. What SQLite's error codes mean to the buffer
(:func:`is_disk_full`, :func:`is_busy`) is decided here too.

Every file of the buffer (the database, its -wal and -shm, quarantined copies, the turnstile) is
mode 0600 whatever the umask. Only a file SQLite calls corrupt (``SQLITE_CORRUPT``,
``SQLITE_NOTADB``, or a failed ``quick_check``) is quarantined; an I/O error, a full disk or a
permission problem never is.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from heatgate.buffer.errors import MasterKeyMismatch, StoreError
from heatgate.buffer.keys import DerivedKeys
from heatgate.buffer.schema import migrate
from heatgate.buffer.turnstile import Turnstile
from heatgate.logs import get_logger

log = get_logger("heatgate.buffer")

__all__ = ["BUSY_TIMEOUT_S", "TURNSTILE_WAIT_S", "OpenedDatabase", "is_busy", "is_disk_full", "open_database"]

BUSY_TIMEOUT_S = 5.0
"""How long a connection waits for another process's write transaction before giving up."""

TURNSTILE_WAIT_S = 30.0
"""How long the agent's writer waits for a local command to finish with the buffer (see
:mod:`heatgate.buffer.turnstile`), and how long a local command waits for another one."""

_FILE_MODE = 0o600
_SQLITE_BUSY = 5
_SQLITE_FULL = 13
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26


@dataclass(frozen=True)
class OpenedDatabase:
    """A connection ready for the store: keys checked, schema current, pragmas set."""

    conn: sqlite3.Connection
    keys: DerivedKeys
    turnstile: Turnstile
    alarms: tuple[str, ...]
    """``corrupt_db_quarantined:<name>`` when a corrupt file was moved aside."""


def open_database(path: Path, master_key: bytes, *, local_command: bool) -> OpenedDatabase:
    """Open or create the database at ``path`` (its folder too).

    ``local_command``: hold the turnstile until the connection is closed (see
    :mod:`heatgate.buffer.turnstile`); :class:`BufferBusy` if another local command holds it
    for longer than :data:`TURNSTILE_WAIT_S`.

    A file that is not a database or fails ``quick_check`` is renamed aside to
    ``<name>.corrupt-<UTC timestamp>`` (with its -wal/-shm) and a fresh one is started. A
    database created with another master key raises :class:`MasterKeyMismatch` before anything
    is written to it; SQLite failures raise :class:`StoreError`.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        turnstile = Turnstile(path)
    except OSError as exc:
        raise StoreError("open", f"cannot create {path}-turnstile: {exc}") from exc
    try:
        if local_command:
            turnstile.hold(TURNSTILE_WAIT_S)
        alarms: list[str] = []
        conn: sqlite3.Connection | None = None
        if path.exists():
            conn, reason = _try_open_existing(path)
            if conn is None:
                aside = _quarantine_file(path)
                alarms.append(f"corrupt_db_quarantined:{aside.name}")
                log.error("buffer.corrupt_quarantined", path=str(path), moved_to=aside.name, reason=reason)
        if conn is None:
            conn = _connect(path)
        try:
            keys = _check_or_init_keys(conn, path, master_key)
        except sqlite3.Error as exc:
            conn.close()
            raise StoreError("open", str(exc)) from exc
        except BaseException:
            conn.close()
            raise
        _set_pragmas(conn)
    except BaseException:
        turnstile.close()
        raise
    return OpenedDatabase(conn, keys, turnstile, tuple(alarms))


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == 28:
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return True
    return "database or disk is full" in str(exc)


def is_busy(exc: sqlite3.Error) -> bool:
    """Another process kept the write lock beyond the busy timeout."""
    return bool(getattr(exc, "sqlite_errorcode", 0) & 0xFF == _SQLITE_BUSY)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Only a damaged file is quarantined: not an I/O error, a full disk (a WAL database cannot
    even be opened without room for its -shm file) or a permission problem."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _connect(path: Path) -> sqlite3.Connection:
    """Connect with a busy timeout, the files 0600 first: SQLite creates the -wal and -shm with
    the database file's mode, so a database that is 0600 before the first write never has a
    wider -wal or -shm, whatever the umask (and older wider files are narrowed here)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, _FILE_MODE)
    try:
        os.fchmod(fd, _FILE_MODE)
    finally:
        os.close(fd)
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", _FILE_MODE)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True, timeout=BUSY_TIMEOUT_S)
    conn.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
    return conn


def _try_open_existing(path: Path) -> tuple[sqlite3.Connection | None, str]:
    """Open ``path`` and run ``quick_check``; ``(None, reason)`` when the file is corrupt."""
    conn: sqlite3.Connection | None = None
    try:
        conn = _connect(path)
        result = [row[0] for row in conn.execute("PRAGMA quick_check").fetchall()]
        if result != ["ok"]:
            conn.close()
            return None, "; ".join(str(r) for r in result[:5])
        return conn, ""
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        if not _is_corruption(exc):
            raise StoreError("open", f"{exc} (is the disk full?)" if "I/O" in str(exc) else str(exc)) from exc
        return None, str(exc)


def _quarantine_file(path: Path) -> Path:
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    os.replace(path, aside)
    with contextlib.suppress(OSError):
        os.chmod(aside, _FILE_MODE)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{path}{suffix}")
        if side.exists():
            os.replace(side, Path(f"{aside}{suffix}"))
            with contextlib.suppress(OSError):
                os.chmod(f"{aside}{suffix}", _FILE_MODE)
    return aside


def _set_pragmas(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA secure_delete = ON")
    conn.execute("PRAGMA temp_store = MEMORY")
    conn.execute("PRAGMA cache_size = -1024")  # 1 MiB: memory does not follow the backlog


def _check_or_init_keys(conn: sqlite3.Connection, path: Path, master_key: bytes) -> DerivedKeys:
    """Compare the master key with the stored key-check value, before any write; a fresh
    database gets its schema, salt and key-check value."""
    tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    if "meta" in tables:
        meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        if "salt" in meta and "key_check" in meta:
            keys = DerivedKeys(master_key, bytes(meta["salt"]))
            if not keys.matches(bytes(meta["key_check"])):
                raise MasterKeyMismatch(path)
            migrate(conn)
            return keys
    if tables - {"meta", "sqlite_sequence"} and "records" in tables:
        raise StoreError("open", f"{path} has records but no key-check value; refusing to guess")
    # A fresh database: auto_vacuum must be chosen before the first table exists.
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL").fetchone()
    migrate(conn)
    salt = os.urandom(16)
    keys = DerivedKeys(master_key, salt)
    conn.execute("BEGIN IMMEDIATE")
    conn.execute(
        "INSERT OR REPLACE INTO meta (name, value) VALUES ('salt', ?), ('key_check', ?)", (salt, keys.check_value)
    )
    conn.execute("COMMIT")
    return keys
