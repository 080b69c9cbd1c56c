"""Every exception the buffer raises on purpose. All derive from :class:`BufferFault` (itself a
:class:`heatgate.errors.HeatgateError`); each carries its fields. The set is flat: a caller at a
task's boundary catches :class:`BufferFault`, or one of these by name."""

from __future__ import annotations

from pathlib import Path

from heatgate.errors import HeatgateError

__all__ = [
    "BufferBusy",
    "BufferClosed",
    "BufferFault",
    "MasterKeyFileError",
    "MasterKeyMismatch",
    "RecordsNotStored",
    "SchemaTooNew",
    "StoreError",
    "UnknownCipher",
]


class BufferFault(HeatgateError):
    """Root of the buffer's errors."""


class MasterKeyFileError(BufferFault):
    """The master key cannot be used: missing, unreadable, readable by group/others, wrong size.
    Callers exit 2."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"master key {path}: {reason}")
        self.path = path
        self.reason = reason


class MasterKeyMismatch(BufferFault):
    """The master key does not match the one the database was created with. The database is
    left untouched. Callers exit 2."""

    def __init__(self, db_path: Path) -> None:
        super().__init__(
            f"buffer {db_path}: the master key does not match the one this database was created with "
            "(wrong key file or credential?); the database was not modified"
        )
        self.db_path = db_path


class UnknownCipher(BufferFault):
    def __init__(self, name: str) -> None:
        super().__init__(f"unknown cipher {name!r}: use 'chacha20-poly1305' or 'aes-256-gcm'")
        self.name = name


class SchemaTooNew(BufferFault):
    """The database was written by a newer heatgate (``PRAGMA user_version`` beyond ours)."""

    def __init__(self, found: int, supported: int) -> None:
        super().__init__(f"buffer schema version {found} is newer than this heatgate understands ({supported})")
        self.found = found
        self.supported = supported


class StoreError(BufferFault):
    """SQLite failed in a way the buffer cannot absorb (not a full disk that eviction can fix),
    or the arguments cannot work (``operation`` says which step)."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"buffer {operation}: {detail}")
        self.operation = operation
        self.detail = detail


class BufferClosed(BufferFault):
    """An operation was asked of a buffer that is closed (or whose writer thread died)."""

    def __init__(self, reason: str = "closed") -> None:
        super().__init__(f"buffer is {reason}")
        self.reason = reason


class RecordsNotStored(BufferFault):
    """The disk is full and no room could be made for these records by the eviction policy
    (they belong to a protected stream such as ``service``, and nothing evictable is left).
    They were **not** committed; the put that carried them raises this. Counted per stream as
    ``rejected`` in the stats, with the alarm ``disk_full_records_rejected``."""

    def __init__(self, ids: frozenset[str], per_stream: dict[str, int]) -> None:
        shown = ", ".join(f"{stream}: {count}" for stream, count in sorted(per_stream.items()))
        super().__init__(f"disk full: {len(ids)} record(s) not stored ({shown})")
        self.ids = ids
        self.per_stream = per_stream


class BufferBusy(BufferFault):
    """Another process kept the buffer locked for longer than this one would wait (``holder``
    says who, as far as it is known). Nothing of the operation that needed the lock was done.
    Callers exit 1."""

    def __init__(self, path: Path, waited_s: float, holder: str) -> None:
        super().__init__(f"buffer {path} is busy: {holder} kept it locked for {waited_s:g} s")
        self.path = path
        self.waited_s = waited_s
        self.holder = holder
