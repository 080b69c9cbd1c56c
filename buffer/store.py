"""The synchronous store: one SQLite connection, used only by the buffer's writer thread.

Nothing here is thread-safe or async; :mod:`buffer.adapter` owns the one thread that calls it.
Transactions are explicit: the adapter opens one with the first write, and commits it when the
commit interval is up (or at once for immediate streams, purges, erasure and state changes).
Committed records are the only ones :meth:`Store.take` hands out.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import sqlite_utils
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from heatgate.buffer.aead import RecordCipher, associated_data, check_cipher
from heatgate.buffer.api import BufferError, BufferStats, NewRecord, StoredRecord, StreamStats
from heatgate.buffer.epochs import default_epoch_s, epoch_window
from heatgate.buffer.errors import BufferBusy, MasterKeyMismatch, RecordsNotStored
from heatgate.buffer.keys import DerivedKeys
from heatgate.buffer.schema import migrate
from heatgate.buffer.turnstile import Turnstile
from heatgate.logs import get_logger

log = get_logger("heatgate.buffer")

__all__ = ["BUSY_TIMEOUT_S", "ROW_OVERHEAD_BYTES", "TURNSTILE_WAIT_S", "Store", "StoreError", "is_disk_full"]

ROW_OVERHEAD_BYTES = 120
"""Estimated bytes a row costs beyond its ciphertext (clear columns, two indexes, the id index)."""

BUSY_TIMEOUT_S = 5.0
"""How long a connection waits for another process's write transaction before giving up."""

TURNSTILE_WAIT_S = 30.0
"""How long the agent's writer waits for a local command to finish with the buffer (see
:mod:`buffer.turnstile`), and how long a local command waits for another one."""

_FILE_MODE = 0o600
_SQLITE_BUSY = 5
_SQLITE_FULL = 13
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
_COUNTERS = ("published", "evicted", "expired", "purged", "auth_failures", "rejected")
_SELECT_COLUMNS = "seq, id, stream, route, priority, created_s, epoch, sealed"


class StoreError(BufferError):
    """SQLite failed in a way the buffer cannot absorb (not a full disk)."""

    def __init__(self, operation: str, detail: str) -> None:
        super().__init__(f"buffer {operation}: {detail}")
        self.operation = operation
        self.detail = detail


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno == 28:
        return True
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None and code & 0xFF == _SQLITE_FULL:
        return True
    return "database or disk is full" in str(exc)


def _is_corruption(exc: sqlite3.DatabaseError) -> bool:
    """Only a damaged file is quarantined: not an I/O error, a full disk (a WAL database cannot
    even be opened without room for its -shm file) or a permission problem."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)
    text = str(exc)
    return "malformed" in text or "not a database" in text


def _record_bytes(record: NewRecord) -> int:
    """What a record is estimated to take on disk (ciphertext, nonce and tag, row overhead)."""
    return len(record.payload) + 28 + ROW_OVERHEAD_BYTES


@dataclass
class _Epoch:
    epoch: int
    stream: str
    start_s: float
    end_s: float
    cipher: RecordCipher | None
    """None when the wrapped key failed to authenticate: its rows go to quarantine."""


@dataclass
class _PendingTx:
    puts: list[Sequence[NewRecord]] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)


class Store:
    """See the module docstring. Open with :meth:`Store.open`."""

    def __init__(
        self,
        path: Path,
        db: sqlite_utils.Database,
        keys: DerivedKeys,
        *,
        cap_bytes: int,
        cipher: str,
        retention_s: Mapping[str, float],
        epoch_s: Mapping[str, float],
        protected_streams: frozenset[str],
        clock: Callable[[], float],
        alarms: list[str],
        turnstile: Turnstile,
    ) -> None:
        self.path = path
        self._turnstile = turnstile
        self._db = db
        self.conn: sqlite3.Connection = db.conn
        self._keys = keys
        self.cap_bytes = cap_bytes
        self._cipher_name = cipher
        self._retention_s = dict(retention_s)
        self._epoch_s = dict(epoch_s)
        self._protected = protected_streams
        self._clock = clock
        self.alarms = alarms
        self._epochs: dict[int, _Epoch] = {}
        self._current: dict[str, _Epoch] = {}
        self._counters: dict[tuple[str, str], int] = {}
        self._unsaved: dict[tuple[str, str], int] = {}
        """Counts that a full disk kept out of the file; written at the next commit that works."""
        self._not_stored: dict[str, str] = {}
        """Ids (-> stream) of records a full disk kept out; the adapter fails their puts."""
        self._inflight: set[str] = set()
        self._pending = _PendingTx()
        self.in_tx = False
        self._page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        # The WAL's share: 1/16 of the cap or of what the file system can hold, whichever is less.
        room_bytes = min(cap_bytes, self.file_bytes() + self._free_disk_bytes())
        self.wal_budget_bytes = min(8 << 20, max(128 << 10, room_bytes // 16))
        self._state_aead = ChaCha20Poly1305(keys.state_key)
        self.conn.execute(f"PRAGMA journal_size_limit = {self.wal_budget_bytes // 2}")
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, self.wal_budget_bytes // 2 // self._page_size)}")
        self._load()
        self.committed_seq = self._max_seq()
        self._data_version = self._read_data_version()

    # ---- opening ------------------------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path,
        master_key: bytes,
        *,
        cap_bytes: int,
        cipher: str,
        retention_s: Mapping[str, float],
        epoch_s: Mapping[str, float] | None,
        protected_streams: frozenset[str],
        clock: Callable[[], float],
        local_command: bool = False,
    ) -> Store:
        """Open or create the database at ``path``.

        ``local_command``: this is a short-lived process writing while the agent may run (the
        CLI): it holds the turnstile (:mod:`buffer.turnstile`) until :meth:`close`, so that the
        agent's writer lets it in; :class:`BufferBusy` if another local command holds it for
        longer than :data:`TURNSTILE_WAIT_S`.

        Every file of the buffer (the database, its -wal and -shm, quarantined copies, the
        turnstile) is mode 0600 whatever the umask.

        A file that is not a database or fails ``quick_check`` is renamed aside to
        ``<name>.corrupt-<UTC timestamp>`` (with its -wal/-shm) and a fresh one is started; an
        alarm says so. A database created with another master key raises
        :class:`MasterKeyMismatch` before anything is written to it.
        """
        check_cipher(cipher)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            turnstile = Turnstile(path)
        except OSError as exc:
            raise StoreError("open", f"cannot create {path}-turnstile: {exc}") from exc
        try:
            if local_command:
                turnstile.hold(TURNSTILE_WAIT_S)
            store = cls._open_with(
                path,
                master_key,
                turnstile,
                cap_bytes=cap_bytes,
                cipher=cipher,
                retention_s=retention_s,
                epoch_s=epoch_s,
                protected_streams=protected_streams,
                clock=clock,
            )
        except BaseException:
            turnstile.close()
            raise
        return store

    @classmethod
    def _open_with(
        cls,
        path: Path,
        master_key: bytes,
        turnstile: Turnstile,
        *,
        cap_bytes: int,
        cipher: str,
        retention_s: Mapping[str, float],
        epoch_s: Mapping[str, float] | None,
        protected_streams: frozenset[str],
        clock: Callable[[], float],
    ) -> Store:
        alarms: list[str] = []
        conn: sqlite3.Connection | None = None
        if path.exists():
            conn, reason = _try_open_existing(path)
            if conn is None:
                aside = _quarantine_file(path)
                alarms.append(f"corrupt_db_quarantined:{aside.name}")
                log.error("buffer_corrupt_quarantined", path=str(path), moved_to=aside.name, reason=reason)
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
        epochs = dict(epoch_s or {})
        for stream, retention in retention_s.items():
            epochs.setdefault(stream, default_epoch_s(retention))
        return cls(
            path,
            sqlite_utils.Database(conn),
            keys,
            cap_bytes=cap_bytes,
            cipher=cipher,
            retention_s=retention_s,
            epoch_s=epochs,
            protected_streams=protected_streams,
            clock=clock,
            alarms=alarms,
            turnstile=turnstile,
        )

    def _load(self) -> None:
        self._counters = {
            (stream, name): int(value)
            for stream, name, value in self.conn.execute("SELECT stream, name, value FROM counters")
        }
        for key, value in self._unsaved.items():
            self._counters[key] = self._counters.get(key, 0) + value
        self._epochs.clear()
        self._current.clear()

    def _max_seq(self) -> int:
        # AUTOINCREMENT: a seq is never reused, so "seq <= committed_seq" means "committed" even
        # after the newest rows were acknowledged and deleted in the open transaction.
        row = self.conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'records'").fetchone()
        return int(row[0]) if row else 0

    # ---- transactions -------------------------------------------------------------------

    def begin(self) -> None:
        """Open a write transaction (after the turnstile: a local command goes first).
        :class:`BufferBusy` if another process keeps the write lock beyond the busy timeout."""
        if self.in_tx:
            return
        if not self._turnstile.pass_through(TURNSTILE_WAIT_S):
            log.warning("buffer_turnstile_held", waited_s=TURNSTILE_WAIT_S)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF != _SQLITE_BUSY:
                raise
            raise BufferBusy(self.path, BUSY_TIMEOUT_S, "another process") from exc
        self.in_tx = True
        version = self._read_data_version()
        if version != self._data_version:
            # Another process (a local command: erase, object, consent) committed since our last
            # transaction: cached data keys may have been destroyed and counters changed.
            self._data_version = version
            self._load()
            self.committed_seq = self._max_seq()

    def _read_data_version(self) -> int:
        return int(self.conn.execute("PRAGMA data_version").fetchone()[0])

    def commit(self) -> None:
        """Commit the open transaction. On a full disk: roll back, evict, replay, alarm."""
        if not self.in_tx:
            return
        try:
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise StoreError("commit", str(exc)) from exc
            self._recover_full()
        else:
            self.in_tx = False
            self._after_commit()

    def _after_commit(self) -> None:
        self._pending = _PendingTx()
        self.committed_seq = self._max_seq()
        self._save_unsaved()
        if "disk_full" in self.alarms and self.used_bytes() < self.disk_budget_bytes() * 0.9:
            self._clear_alarm("disk_full")
        if self.file_bytes() <= self.cap_bytes:
            if "over_cap_evicting" in self.alarms and self.used_bytes() < self.db_budget_bytes() * 0.9:
                self._clear_alarm("over_cap_evicting")
            return
        # Over the cap (a WAL that overshot, or a cap lowered since the last start): evict what
        # the live pages exceed, then give the space back and truncate the WAL.
        try:
            self.begin()
            self._enforce_cap(extra_bytes=0)
            self.conn.execute("COMMIT")
            self.in_tx = False
        except sqlite3.Error as exc:
            self._rollback()
            if not is_disk_full(exc):
                raise StoreError("evict", str(exc)) from exc
            self._raise_alarm("disk_full")
        self.compact()

    def _rollback(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("ROLLBACK")
        self.in_tx = False
        self._load()  # counters and key caches may hold what was rolled back

    def compact(self) -> None:
        """Give freed pages back to the file system and truncate the WAL, so that deleted pages
        (overwritten by ``secure_delete``) do not linger in the WAL file."""
        if self.in_tx:
            self.commit()
        try:
            self.conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                raise StoreError("compact", str(exc)) from exc
            self._raise_alarm("disk_full")

    # ---- put ------------------------------------------------------------------------------

    def put(self, records: Sequence[NewRecord]) -> None:
        """Encrypt and insert in the open transaction (opened if needed). Committed by
        :meth:`commit`. Records whose id is already stored are ignored (a retried put)."""
        self.begin()
        self._pending.puts.append(records)
        try:
            self._insert(records)
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                self._rollback()
                raise StoreError("put", str(exc)) from exc
            self._recover_full()

    def _insert(self, records: Sequence[NewRecord]) -> None:
        if not records:
            return
        now_s = self._clock()
        estimate = sum(_record_bytes(r) for r in records)
        if self.used_bytes() + estimate > min(self.db_budget_bytes(), self.disk_budget_bytes()):
            records = self._enforce_cap(extra_bytes=estimate, incoming=records, for_incoming=True)
        rows = []
        expired: dict[str, int] = {}
        for record in records:
            epoch = self._epoch_for(record.stream, record.created_s, now_s)
            if epoch is None:
                expired[record.stream] = expired.get(record.stream, 0) + 1
                continue
            assert epoch.cipher is not None
            ad = associated_data(record.id, record.stream, record.route, record.priority, record.created_s, epoch.epoch)
            rows.append(
                (
                    record.id,
                    record.stream,
                    record.route,
                    record.priority,
                    record.created_s,
                    epoch.epoch,
                    epoch.cipher.seal(record.payload, ad),
                )
            )
        self.conn.executemany(
            "INSERT OR IGNORE INTO records (id, stream, route, priority, created_s, epoch, sealed)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for stream, count in expired.items():
            self._count(stream, "expired", count)

    def _epoch_for(self, stream: str, created_s: float, now_s: float) -> _Epoch | None:
        current = self._current.get(stream)
        if current is not None and current.start_s <= created_s < current.end_s:
            return current
        retention = self._retention_s.get(stream)
        row = self.conn.execute(
            "SELECT epoch, start_s, end_s, cipher, wrapped FROM data_keys"
            " WHERE stream = ? AND start_s <= ? AND end_s > ? ORDER BY epoch DESC LIMIT 1",
            (stream, created_s, created_s),
        ).fetchone()
        if row is not None:
            epoch = self._epoch_from_row(stream, *row)
            if epoch.cipher is None:
                row = None  # a key that fails to unwrap is not used for new records
        if row is None:
            start_s, end_s = epoch_window(created_s, self._epoch_s.get(stream) or default_epoch_s(retention))
            if retention is not None and start_s + retention <= now_s:
                return None  # already past retention: never stored
            data_key = os.urandom(32)
            cur = self.conn.execute(
                "INSERT INTO data_keys (stream, start_s, end_s, cipher, wrapped) VALUES (?, ?, ?, ?, x'')",
                (stream, start_s, end_s, self._cipher_name),
            )
            number = int(cur.lastrowid or 0)
            wrapped = self._keys.wrap(data_key, _key_ad(number, stream, start_s, end_s, self._cipher_name))
            self.conn.execute("UPDATE data_keys SET wrapped = ? WHERE epoch = ?", (wrapped, number))
            epoch = _Epoch(number, stream, start_s, end_s, RecordCipher(self._cipher_name, data_key))
            self._epochs[number] = epoch
        if current is None or epoch.start_s >= current.start_s:
            self._current[stream] = epoch
        return epoch

    def _epoch_from_row(
        self, stream: str, number: int, start_s: float, end_s: float, cipher: str, wrapped: bytes
    ) -> _Epoch:
        cached = self._epochs.get(number)
        if cached is not None:
            return cached
        try:
            data_key = self._keys.unwrap(wrapped, _key_ad(number, stream, start_s, end_s, cipher))
            epoch = _Epoch(number, stream, start_s, end_s, RecordCipher(cipher, data_key))
        except (InvalidTag, ValueError):
            epoch = _Epoch(number, stream, start_s, end_s, None)
        self._epochs[number] = epoch
        return epoch

    def _epoch(self, number: int) -> _Epoch | None:
        cached = self._epochs.get(number)
        if cached is not None:
            return cached
        row = self.conn.execute(
            "SELECT stream, start_s, end_s, cipher, wrapped FROM data_keys WHERE epoch = ?", (number,)
        ).fetchone()
        if row is None:
            return None
        stream, start_s, end_s, cipher, wrapped = row
        return self._epoch_from_row(stream, number, start_s, end_s, cipher, wrapped)

    # ---- take / ack / release -----------------------------------------------------------

    def take(self, limit: int, exclude_streams: frozenset[str]) -> list[StoredRecord]:
        """Committed, not-in-flight records by lane (priority) then age; marks them in flight."""
        if limit <= 0:
            return []
        out: list[StoredRecord] = []
        bad: list[tuple[int, str]] = []
        skip = len(self._inflight)
        sql = f"SELECT {_SELECT_COLUMNS} FROM records WHERE seq <= ?"
        params: list[object] = [self.committed_seq]
        if exclude_streams:
            sql += f" AND stream NOT IN ({','.join('?' * len(exclude_streams))})"
            params.extend(sorted(exclude_streams))
        sql += " ORDER BY priority, created_s LIMIT ?"
        params.append(limit + skip)
        for seq, rid, stream, route, priority, created_s, number, sealed in self.conn.execute(sql, params):
            if rid in self._inflight:
                continue
            payload = self._open(rid, stream, route, priority, created_s, number, sealed)
            if payload is None:
                bad.append((seq, stream))
                continue
            out.append(
                StoredRecord(
                    id=rid, stream=stream, route=route, priority=priority, created_s=created_s, payload=payload
                )
            )
            if len(out) >= limit:
                break
        self._inflight.update(r.id for r in out)
        if bad:
            self._quarantine(bad)
        return out

    def _open(
        self, rid: str, stream: str, route: str, priority: int, created_s: float, number: int, sealed: bytes
    ) -> bytes | None:
        epoch = self._epoch(number)
        if epoch is None or epoch.cipher is None or epoch.stream != stream:
            return None
        try:
            return epoch.cipher.open(sealed, associated_data(rid, stream, route, priority, created_s, number))
        except InvalidTag:
            return None

    def _quarantine(self, bad: Sequence[tuple[int, str]]) -> None:
        self.begin()
        now_s = self._clock()
        for seq, stream in bad:
            self.conn.execute(
                f"INSERT OR REPLACE INTO quarantine ({_SELECT_COLUMNS}, reason, quarantined_s)"
                f" SELECT {_SELECT_COLUMNS}, 'authentication failed', ? FROM records WHERE seq = ?",
                (now_s, seq),
            )
            self.conn.execute("DELETE FROM records WHERE seq = ?", (seq,))
            self._count(stream, "auth_failures", 1)
        self.commit()

    def ack(self, ids: Sequence[str]) -> None:
        """Delete acknowledged records (in the open transaction) and count them published."""
        if not ids:
            return
        self.begin()
        self._pending.acks.extend(ids)
        try:
            self._delete_ids(ids, "published")
        except sqlite3.Error as exc:
            if not is_disk_full(exc):
                self._rollback()
                raise StoreError("ack", str(exc)) from exc
            self._recover_full()
        self._inflight.difference_update(ids)

    def _delete_ids(self, ids: Sequence[str], counter: str) -> None:
        per_stream: dict[str, int] = {}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for (stream,) in self.conn.execute(
                f"DELETE FROM records WHERE id IN ({','.join('?' * len(chunk))}) RETURNING stream", chunk
            ).fetchall():
                per_stream[stream] = per_stream.get(stream, 0) + 1
        for stream, count in per_stream.items():
            self._count(stream, counter, count)

    def release(self, ids: Sequence[str]) -> None:
        self._inflight.difference_update(ids)

    # ---- retention, purge, erasure ------------------------------------------------------

    def sweep(self, now_s: float | None) -> dict[str, int]:
        """Delete every epoch whose start is older than its stream's retention, with its key.
        Returns rows removed per stream (streams with nothing expired are left out)."""
        now = self._clock() if now_s is None else now_s
        removed: dict[str, int] = {}
        expired = [
            (number, stream)
            for number, stream, start_s in self.conn.execute("SELECT epoch, stream, start_s FROM data_keys").fetchall()
            if stream in self._retention_s and start_s + self._retention_s[stream] <= now
        ]
        if not expired:
            return removed
        self.commit()
        self.begin()
        for number, stream in expired:
            count = self._destroy_epoch(number)
            removed[stream] = removed.get(stream, 0) + count
            self._count(stream, "expired", count)
        self.commit()
        self.compact()
        return removed

    def _destroy_epoch(self, number: int) -> int:
        rids = [r for (r,) in self.conn.execute("SELECT id FROM records WHERE epoch = ?", (number,))]
        self.conn.execute("DELETE FROM records WHERE epoch = ?", (number,))
        self.conn.execute("DELETE FROM data_keys WHERE epoch = ?", (number,))
        epoch = self._epochs.pop(number, None)
        if epoch is not None and self._current.get(epoch.stream) is epoch:
            del self._current[epoch.stream]
        self._inflight.difference_update(rids)
        return len(rids)

    def purge_stream(self, stream: str) -> int:
        """Delete a stream's records and destroy its data keys; commits and compacts at once."""
        self.commit()
        self.begin()
        numbers = [n for (n,) in self.conn.execute("SELECT epoch FROM data_keys WHERE stream = ?", (stream,))]
        count = sum(self._destroy_epoch(n) for n in numbers)
        # Rows whose epoch row is missing (should not happen) go too.
        for (rid,) in self.conn.execute("DELETE FROM records WHERE stream = ? RETURNING id", (stream,)).fetchall():
            self._inflight.discard(rid)
            count += 1
        self._current.pop(stream, None)
        if count:
            self._count(stream, "purged", count)
        self.commit()
        self.compact()
        return count

    def erase_all(self) -> int:
        """Every stream purged, every data key destroyed, the quarantine emptied. The small
        state store (consent flags, command nonces) is kept."""
        streams = {s for (s,) in self.conn.execute("SELECT DISTINCT stream FROM data_keys")}
        streams |= {s for (s,) in self.conn.execute("SELECT DISTINCT stream FROM records")}
        total = sum(self.purge_stream(s) for s in sorted(streams))
        self.begin()
        self.conn.execute("DELETE FROM quarantine")
        self.commit()
        self.compact()
        return total

    # ---- cap and eviction ---------------------------------------------------------------

    def file_bytes(self) -> int:
        total = 0
        for suffix in ("", "-wal"):
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(f"{self.path}{suffix}").st_size
        return total

    def used_bytes(self) -> int:
        page_count = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return int((page_count - free) * self._page_size)

    def _free_disk_bytes(self) -> int:
        st = os.statvfs(self.path.parent)
        return int(st.f_bavail * st.f_frsize)

    def disk_budget_bytes(self) -> int:
        """What the live pages may grow to before the file system is full, keeping room for the
        WAL (deletes need WAL space too, so eviction must start before the disk is full)."""
        try:
            db_file = os.stat(self.path).st_size
        except FileNotFoundError:
            db_file = 0
        return db_file + self._free_disk_bytes() - self.wal_budget_bytes - (64 << 10)

    def db_budget_bytes(self) -> int:
        return self.cap_bytes - self.wal_budget_bytes

    def _enforce_cap(
        self, *, extra_bytes: int, incoming: Sequence[NewRecord] = (), for_incoming: bool = False
    ) -> list[NewRecord]:
        """Evict until the live pages plus ``extra_bytes`` fit the budget (the cap's, or the
        disk's if that is smaller) with a 1 % margin. With ``for_incoming``, the room is for
        ``incoming`` (the records about to be inserted), which take part in the policy; returns
        those of them that are to be inserted."""
        cap_budget = self.db_budget_bytes()
        disk_budget = self.disk_budget_bytes()
        budget = min(cap_budget, disk_budget)
        target = budget - extra_bytes - budget // 100
        need = self.used_bytes() - target
        if need <= 0:
            return list(incoming)
        self._raise_alarm("disk_full" if disk_budget < cap_budget else "over_cap_evicting")
        kept, _ = self._evict_by_policy(need, incoming, for_incoming=for_incoming)
        return kept

    def evict(self, need_bytes: int) -> int:
        """Delete stored records worth about ``need_bytes`` by policy (see
        :meth:`_evict_by_policy`). Counted per stream as ``evicted``. Returns rows deleted."""
        _, deleted = self._evict_by_policy(need_bytes, (), for_incoming=False)
        return deleted

    def _evict_by_policy(
        self, need_bytes: int, incoming: Sequence[NewRecord], *, for_incoming: bool
    ) -> tuple[list[NewRecord], int]:
        """Make ``need_bytes`` of room, taking stored rows and ``incoming`` records (not yet
        inserted: the newest) as one population. Unprotected streams first: lowest priority
        (highest number) first, within a priority the stored rows oldest first, then incoming
        records oldest first. Protected (service) rows go only when no record of any other stream
        is left, stored or incoming, and then at most as many bytes of them as the incoming
        protected records take (the oldest fault makes room for the newest, one for one; never
        more, whatever the budget estimate says), or, without ``for_incoming``, to bring an
        over-cap file back under the cap. Incoming protected records are never dropped here.
        Every row deleted and every incoming record dropped is counted as ``evicted``. Returns
        the incoming records to insert and the rows deleted."""
        self.begin()
        freed = 0
        deleted = 0
        kept = list(incoming)
        for protected in (False, True):
            if protected and for_incoming:
                if not kept:
                    break  # nothing is coming in any more: no reason to touch service rows
                need_bytes = min(need_bytes, freed + sum(_record_bytes(r) for r in kept))
            levels = {p for (p,) in self.conn.execute("SELECT DISTINCT priority FROM records")}
            if not protected:
                levels |= {r.priority for r in kept if r.stream not in self._protected}
            for priority in sorted(levels, reverse=True):
                while freed < need_bytes:
                    rows = self._eviction_candidates(priority, protected, need_bytes - freed)
                    if not rows:
                        break
                    freed_now, per_stream = self._delete_rows(rows)
                    freed += freed_now
                    deleted += len(rows)
                    for stream, count in per_stream.items():
                        self._count(stream, "evicted", count)
                if not protected and freed < need_bytes:
                    dropped: dict[str, int] = {}
                    for record in sorted(
                        (r for r in kept if r.priority == priority and r.stream not in self._protected),
                        key=lambda r: r.created_s,
                    ):
                        if freed >= need_bytes:
                            break
                        kept.remove(record)
                        freed += _record_bytes(record)
                        dropped[record.stream] = dropped.get(record.stream, 0) + 1
                    for stream, count in dropped.items():
                        self._count(stream, "evicted", count)
                if freed >= need_bytes:
                    break
            if freed >= need_bytes:
                break
        return kept, deleted

    def _eviction_candidates(self, priority: int, protected: bool, need_bytes: int) -> list[tuple[int, str, int]]:
        sql = "SELECT seq, stream, length(sealed) FROM records WHERE priority = ?"
        params: list[object] = [priority]
        if not protected and self._protected:
            sql += f" AND stream NOT IN ({','.join('?' * len(self._protected))})"
            params.extend(sorted(self._protected))
        sql += " ORDER BY created_s LIMIT 1000"
        chosen: list[tuple[int, str, int]] = []
        acc = 0
        for seq, stream, size in self.conn.execute(sql, params):
            chosen.append((seq, stream, size))
            acc += size + ROW_OVERHEAD_BYTES
            if acc >= need_bytes:
                break
        return chosen

    def _delete_rows(self, rows: Sequence[tuple[int, str, int]]) -> tuple[int, dict[str, int]]:
        per_stream: dict[str, int] = {}
        freed = 0
        seqs = [(seq,) for seq, _, _ in rows]
        ids = [
            rid
            for (rid,) in self.conn.execute(
                f"SELECT id FROM records WHERE seq IN ({','.join('?' * len(seqs))})", [s for (s,) in seqs]
            )
        ]
        self.conn.executemany("DELETE FROM records WHERE seq = ?", seqs)
        self._inflight.difference_update(ids)
        for _, stream, size in rows:
            per_stream[stream] = per_stream.get(stream, 0) + 1
            freed += size + ROW_OVERHEAD_BYTES
        return freed, per_stream

    def _recover_full(self) -> None:
        """The disk is full: roll back, make room, give space back, replay the transaction.

        Acknowledged rows are deleted first (free room); then rows are evicted and the
        transaction's unprotected records dropped, both by policy (see
        :meth:`_evict_by_policy`) and counted as ``evicted``; then the remaining records are
        inserted again. If even that cannot be committed, the transaction's unprotected records
        are counted as ``evicted`` (alarm ``disk_full_records_dropped``) and its protected ones
        as ``rejected`` (alarm ``disk_full_records_rejected``): they are not stored, and
        :meth:`take_not_stored` names them so that their puts fail instead of returning."""
        self._raise_alarm("disk_full")
        pending = self._pending
        self._pending = _PendingTx()
        self._rollback()
        with contextlib.suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        batch = [record for records in pending.puts for record in records]
        acks = list(pending.acks)
        # Start small (keep as much of the newest as fits) and double: 64 KiB .. 2 MiB or more.
        need = max(self.used_bytes() // 32, 64 << 10)
        for _attempt in range(6):
            try:
                self.begin()
                if acks:
                    self._delete_ids(acks, "published")
                kept, _ = self._evict_by_policy(need, batch, for_incoming=True)
                self.conn.execute("COMMIT")
                self.in_tx = False
                # Committed: the acks are done and the drops counted; a retry starts from here.
                batch, acks = kept, []
                self.conn.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page per call
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
                self.begin()
                self._insert(batch)
                self.conn.execute("COMMIT")
                self.in_tx = False
                self.committed_seq = self._max_seq()
                self._save_unsaved()
                return
            except sqlite3.Error as exc:
                self._rollback()
                if not is_disk_full(exc):
                    raise StoreError("recover from full disk", str(exc)) from exc
                need *= 2
        for record in batch:
            protected = record.stream in self._protected
            key = (record.stream, "rejected" if protected else "evicted")
            self._unsaved[key] = self._unsaved.get(key, 0) + 1
            self._counters[key] = self._counters.get(key, 0) + 1
            if protected:
                self._not_stored[record.id] = record.stream
        if any(r.stream not in self._protected for r in batch):
            self._raise_alarm("disk_full_records_dropped")
        if any(r.stream in self._protected for r in batch):
            self._raise_alarm("disk_full_records_rejected")
        log.error(
            "buffer_disk_full_records_not_stored",
            records=len(batch),
            rejected=sum(r.stream in self._protected for r in batch),
        )
        self._save_unsaved()

    def take_not_stored(self) -> RecordsNotStored | None:
        """The protected records a full disk kept out since the last call (their puts must
        fail), or None."""
        if not self._not_stored:
            return None
        per_stream: dict[str, int] = {}
        for stream in self._not_stored.values():
            per_stream[stream] = per_stream.get(stream, 0) + 1
        error = RecordsNotStored(frozenset(self._not_stored), per_stream)
        self._not_stored = {}
        return error

    def _save_unsaved(self) -> None:
        """Write the counts a full disk kept out of the file, in a transaction of their own;
        they stay in memory (and in the stats) until that works."""
        if not self._unsaved or self.in_tx:
            return
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for (stream, name), value in self._unsaved.items():
                self.conn.execute(
                    "INSERT INTO counters (stream, name, value) VALUES (?, ?, ?)"
                    " ON CONFLICT (stream, name) DO UPDATE SET value = value + excluded.value",
                    (stream, name, value),
                )
            self.conn.execute("COMMIT")
        except sqlite3.Error:
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("ROLLBACK")
            return
        self._unsaved.clear()

    # ---- state, export, stats -----------------------------------------------------------

    def get_state(self, key: str) -> bytes | None:
        row = self.conn.execute("SELECT sealed FROM state WHERE name = ?", (key,)).fetchone()
        if row is None:
            return None
        sealed = bytes(row[0])
        try:
            return self._state_aead.decrypt(sealed[:12], sealed[12:], _state_ad(key))
        except InvalidTag:
            raise StoreError("get_state", f"state entry {key!r} failed authentication") from None

    def set_state(self, key: str, value: bytes | None) -> None:
        self.begin()
        if value is None:
            self.conn.execute("DELETE FROM state WHERE name = ?", (key,))
        else:
            nonce = os.urandom(12)
            sealed = nonce + self._state_aead.encrypt(nonce, value, _state_ad(key))
            self.conn.execute("INSERT OR REPLACE INTO state (name, sealed) VALUES (?, ?)", (key, sealed))
        self.commit()

    def export_all(self) -> list[StoredRecord]:
        """Every committed record that decrypts (failures are quarantined), oldest first."""
        out: list[StoredRecord] = []
        bad: list[tuple[int, str]] = []
        rows = self.conn.execute(
            f"SELECT {_SELECT_COLUMNS} FROM records WHERE seq <= ? ORDER BY created_s, seq", (self.committed_seq,)
        ).fetchall()
        for seq, rid, stream, route, priority, created_s, number, sealed in rows:
            payload = self._open(rid, stream, route, priority, created_s, number, sealed)
            if payload is None:
                bad.append((seq, stream))
                continue
            out.append(
                StoredRecord(
                    id=rid, stream=stream, route=route, priority=priority, created_s=created_s, payload=payload
                )
            )
        if bad:
            self._quarantine(bad)
        return out

    def count(self, stream: str | None) -> int:
        if stream is None:
            return int(self.conn.execute("SELECT count(*) FROM records").fetchone()[0])
        return int(self.conn.execute("SELECT count(*) FROM records WHERE stream = ?", (stream,)).fetchone()[0])

    def stats(self) -> BufferStats:
        streams: dict[str, StreamStats] = {}

        def entry(name: str) -> StreamStats:
            return streams.setdefault(name, StreamStats())

        key_epochs: dict[str, int] = {}
        epoch_stream: dict[int, str] = {}
        for number, stream in self.conn.execute("SELECT epoch, stream FROM data_keys"):
            epoch_stream[number] = stream
            key_epochs[stream] = key_epochs.get(stream, 0) + 1
        # Committed rows only: a row of the open transaction is not stored until its commit.
        for number, count, oldest in self.conn.execute(
            "SELECT epoch, count(*), min(created_s) FROM records WHERE seq <= ? GROUP BY epoch", (self.committed_seq,)
        ):
            s = entry(epoch_stream.get(number, "?"))
            s.queued += count
            if s.oldest_created_s is None or oldest < s.oldest_created_s:
                s.oldest_created_s = oldest
        for (stream, name), value in self._counters.items():
            setattr(entry(stream), name, value)
        for stream in self._retention_s:
            entry(stream)
        return BufferStats(
            file_bytes=self.file_bytes(),
            cap_bytes=self.cap_bytes,
            streams=dict(sorted(streams.items())),
            alarms=list(self.alarms),
            key_epochs=dict(sorted(key_epochs.items())),
        )

    def close(self) -> None:
        try:
            if self.in_tx:
                self.commit()
            with contextlib.suppress(sqlite3.Error):
                self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
        finally:
            self.conn.close()
            self._turnstile.close()

    # ---- helpers ------------------------------------------------------------------------

    def _count(self, stream: str, name: str, delta: int) -> None:
        assert name in _COUNTERS
        self.conn.execute(
            "INSERT INTO counters (stream, name, value) VALUES (?, ?, ?)"
            " ON CONFLICT (stream, name) DO UPDATE SET value = value + excluded.value",
            (stream, name, delta),
        )
        self._counters[(stream, name)] = self._counters.get((stream, name), 0) + delta

    def _raise_alarm(self, alarm: str) -> None:
        if alarm not in self.alarms:
            self.alarms.append(alarm)

    def _clear_alarm(self, alarm: str) -> None:
        if alarm in self.alarms:
            self.alarms.remove(alarm)


def _key_ad(number: int, stream: str, start_s: float, end_s: float, cipher: str) -> bytes:
    return associated_data("data-key", stream, cipher, 0, start_s, number) + repr(end_s).encode()


def _state_ad(key: str) -> bytes:
    return b"heatgate-state\x00" + key.encode()


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
    conn.execute("PRAGMA cache_size = -4096")  # 4 MiB: memory does not follow the backlog


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
