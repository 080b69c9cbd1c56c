"""Does a master key open a buffer? Read-only, without opening the buffer for writing.

The buffer stores a random salt and a key-check value derived from the master key (see
:mod:`heatgate.buffer.keys`); comparing them tells whether a key is the one the database was made
with. ``provision`` uses it before replacing a key, ``doctor`` to catch a key that was replaced.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

from heatgate.buffer.keys import DerivedKeys

__all__ = ["BufferKeyProbe", "buffer_files", "probe_buffer"]


@dataclass(frozen=True)
class BufferKeyProbe:
    path: Path
    exists: bool
    records: int = 0
    """Records waiting to be published (each one lost if the key is lost)."""
    has_key_check: bool = False
    matches: bool | None = None
    """None when no key was given or the database has no key-check value."""
    error: str = ""


def buffer_files(path: Path) -> list[Path]:
    """The database and its WAL and shared-memory files, those that exist."""
    return [p for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")) if p.exists()]


def probe_buffer(path: Path, master_key: bytes | None = None) -> BufferKeyProbe:
    """Count the records of the buffer at ``path`` and, given ``master_key``, say whether it opens it."""
    if not path.exists():
        return BufferKeyProbe(path, exists=False)
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            records = conn.execute("SELECT count(*) FROM records").fetchone()[0] if "records" in tables else 0
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall()) if "meta" in tables else {}
    except sqlite3.DatabaseError as exc:
        return BufferKeyProbe(path, exists=True, error=str(exc))
    has_check = "salt" in meta and "key_check" in meta
    matches = None
    if has_check and master_key is not None:
        matches = DerivedKeys(master_key, bytes(meta["salt"])).matches(bytes(meta["key_check"]))
    return BufferKeyProbe(path, exists=True, records=int(records), has_key_check=has_check, matches=matches)
