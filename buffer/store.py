"""The synchronous store: one SQLite connection, used only by the buffer's writer thread.

Nothing here is thread-safe or async; :mod:`heatgate.buffer.adapter` owns the one thread that calls it.
Transactions are explicit: the adapter opens one with the first write, and commits it when the
commit interval is up (or at once for immediate streams, purges, erasure and state changes).
Committed records are the only ones :meth:`Store.take` hands out.

Here: put/take/ack/release, the retention sweep, purge and erasure, the cap and full-disk
recovery, the counters and stats. It composes :mod:`~heatgate.buffer.sqlite_open` (opening,
modes, quarantine), :mod:`~heatgate.buffer.eviction` (which rows go: a pure planner; the store
reads it the rows and deletes what it names), :mod:`~heatgate.buffer.data_keys` (the
per-epoch data keys) and :mod:`~heatgate.buffer.sealed_state` (the encrypted key-value state).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from heatgate.buffer.aead import associated_data, check_cipher
from heatgate.buffer.api import BufferStats, NewRecord, StoredRecord, StreamStats
from heatgate.buffer.batch import BatchBuilder, TakenBatch
from heatgate.buffer.data_keys import DataKeys
from heatgate.buffer.epochs import default_epoch_s
from heatgate.buffer.errors import BufferBusy, RecordsNotStored, StoreError
from heatgate.buffer.eviction import ROW_OVERHEAD_BYTES, Candidate, need_bytes, plan_eviction, record_bytes
from heatgate.buffer.sealed_state import SealedState
from heatgate.buffer.sqlite_open import BUSY_TIMEOUT_S, TURNSTILE_WAIT_S, is_busy, is_disk_full, open_database
from heatgate.buffer.turnstile import Turnstile
from heatgate.buffer.wire import body_of, wire_form
from heatgate.logs import get_logger
from heatgate.sodium import AuthenticationFailed

log = get_logger("heatgate.buffer")

__all__ = ["Store"]

_WIRE_OVERHEAD_BYTES = len(b'{"id":"","body":}')
_COUNTERS = ("published", "evicted", "expired", "purged", "auth_failures", "rejected")
_SELECT_COLUMNS = "seq, id, stream, route, priority, created_s, epoch, sealed, form"
_FORM_BODY = 0
"""The ciphertext holds the record's body (rows of schema version 1)."""
_FORM_WIRE = 1
"""The ciphertext holds the record's wire form (:mod:`heatgate.buffer.wire`); every new row."""
_DELETE_BATCH = 1000
"""Evicted rows deleted per statement batch: memory stays flat however much is evicted."""


def _record_bytes(record: NewRecord) -> int:
    """What a record is estimated to take on disk (its wire form's ciphertext, nonce and tag,
    row overhead)."""
    return record_bytes(len(record.payload) + len(record.id) + _WIRE_OVERHEAD_BYTES)


@dataclass
class _PendingTx:
    puts: list[Sequence[NewRecord]] = field(default_factory=list)
    acks: list[str] = field(default_factory=list)


class Store:
    """See the module docstring. Open with :meth:`Store.open`."""

    def __init__(
        self,
        path: Path,
        conn: sqlite3.Connection,
        data_keys: DataKeys,
        state: SealedState,
        *,
        cap_bytes: int,
        retention_s: Mapping[str, float],
        protected_streams: frozenset[str],
        clock: Callable[[], float],
        alarms: list[str],
        turnstile: Turnstile,
    ) -> None:
        self.path = path
        self._turnstile = turnstile
        self.conn = conn
        self._data_keys = data_keys
        self._state = state
        self.cap_bytes = cap_bytes
        self._retention_s = dict(retention_s)
        self._protected = protected_streams
        self._clock = clock
        self.alarms = alarms
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
        self.conn.execute(f"PRAGMA journal_size_limit = {self.wal_budget_bytes // 2}")
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {max(16, self.wal_budget_bytes // 2 // self._page_size)}")
        self._load()
        self.committed_seq = self._max_seq()
        self._data_version = self._read_data_version()

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
        """Open or create the database at ``path`` (see
        :func:`heatgate.buffer.sqlite_open.open_database`: file modes, the turnstile, the
        master-key check, the quarantine of a corrupt file).

        ``local_command``: this is a short-lived process writing while the agent may run (the
        CLI): it holds the turnstile (:mod:`heatgate.buffer.turnstile`) until :meth:`close`, so
        that the agent's writer lets it in; :class:`BufferBusy` if another local command holds it
        for longer than :data:`~heatgate.buffer.sqlite_open.TURNSTILE_WAIT_S`.
        """
        check_cipher(cipher)
        path = Path(path)
        opened = open_database(path, master_key, local_command=local_command)
        epochs = dict(epoch_s or {})
        for stream, retention in retention_s.items():
            epochs.setdefault(stream, default_epoch_s(retention))
        try:
            return cls(
                path,
                opened.conn,
                DataKeys(opened.conn, opened.keys, cipher=cipher, retention_s=retention_s, epoch_s=epochs),
                SealedState(opened.conn, opened.keys.state_key),
                cap_bytes=cap_bytes,
                retention_s=retention_s,
                protected_streams=protected_streams,
                clock=clock,
                alarms=list(opened.alarms),
                turnstile=opened.turnstile,
            )
        except BaseException:
            opened.conn.close()
            opened.turnstile.close()
            raise

    def _load(self) -> None:
        self._counters = {
            (stream, name): int(value)
            for stream, name, value in self.conn.execute("SELECT stream, name, value FROM counters")
        }
        for key, value in self._unsaved.items():
            self._counters[key] = self._counters.get(key, 0) + value
        self._data_keys.clear()

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
            log.warning("buffer.turnstile_held", waited_s=TURNSTILE_WAIT_S)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
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
            epoch = self._data_keys.for_record(record.stream, record.created_s, now_s)
            if epoch is None:
                expired[record.stream] = expired.get(record.stream, 0) + 1
                continue
            assert epoch.cipher is not None
            ad = associated_data(
                record.id, record.stream, record.route, record.priority, record.created_s, epoch.epoch, _FORM_WIRE
            )
            rows.append(
                (
                    record.id,
                    record.stream,
                    record.route,
                    record.priority,
                    record.created_s,
                    epoch.epoch,
                    epoch.cipher.seal(wire_form(record.id, record.payload), ad),
                    _FORM_WIRE,
                )
            )
        self.conn.executemany(
            "INSERT OR IGNORE INTO records (id, stream, route, priority, created_s, epoch, sealed, form)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        for stream, count in expired.items():
            self._count(stream, "expired", count)

    # ---- take / ack / release -----------------------------------------------------------

    def take(self, limit: int, exclude_streams: frozenset[str]) -> list[StoredRecord]:
        """Committed, not-in-flight records by lane (priority) then age; marks them in flight."""
        return [_stored_record(*row) for row in self._take_rows(limit, exclude_streams)]

    def take_batch(self, limit: int, exclude_streams: frozenset[str]) -> TakenBatch:
        """What :meth:`take` hands out, as columns with the wire forms (made here for rows that
        hold only the body)."""
        batch = BatchBuilder()
        add = batch.add
        for rid, stream, route, _priority, _created_s, form, plain in self._take_rows(limit, exclude_streams):
            add(rid, stream, route, plain if form == _FORM_WIRE else wire_form(rid, plain))
        return batch.build()

    def _take_rows(
        self, limit: int, exclude_streams: frozenset[str]
    ) -> list[tuple[str, str, str, int, float, int, bytes]]:
        """Up to ``limit`` committed, not-in-flight rows by lane then age, decrypted:
        ``(id, stream, route, priority, created_s, form, plaintext)``. Marks them in flight;
        rows that fail authentication are quarantined instead."""
        if limit <= 0:
            return []
        out: list[tuple[str, str, str, int, float, int, bytes]] = []
        bad: list[tuple[int, str]] = []
        skip = len(self._inflight)
        sql = f"SELECT {_SELECT_COLUMNS} FROM records WHERE seq <= ?"
        params: list[object] = [self.committed_seq]
        if exclude_streams:
            sql += f" AND stream NOT IN ({','.join('?' * len(exclude_streams))})"
            params.extend(sorted(exclude_streams))
        sql += " ORDER BY priority, created_s LIMIT ?"
        params.append(limit + skip)
        inflight = self._inflight
        for seq, rid, stream, route, priority, created_s, number, sealed, form in self.conn.execute(sql, params):
            if rid in inflight:
                continue
            plain = self._decrypt(rid, stream, route, priority, created_s, number, sealed, form)
            if plain is None:
                bad.append((seq, stream))
                continue
            out.append((rid, stream, route, priority, created_s, form, plain))
            if len(out) >= limit:
                break
        inflight.update(row[0] for row in out)
        if bad:
            self._quarantine(bad)
        return out

    def _decrypt(
        self,
        rid: str,
        stream: str,
        route: str,
        priority: int,
        created_s: float,
        number: int,
        sealed: bytes,
        form: int,
    ) -> bytes | None:
        """The row's plaintext (its body or its wire form, as ``form`` says), or None if it fails
        authentication (or has no key, or an unknown form)."""
        epoch = self._data_keys.by_number(number)
        if epoch is None or epoch.cipher is None or epoch.stream != stream or form not in (_FORM_BODY, _FORM_WIRE):
            return None
        try:
            plain: bytes = epoch.cipher.open(
                sealed, associated_data(rid, stream, route, priority, created_s, number, form)
            )
        except AuthenticationFailed:
            return None
        return plain

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
        self._data_keys.forget(number)
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
        self._data_keys.forget_stream(stream)
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
        need = need_bytes(
            used_bytes=self.used_bytes(), budget_bytes=min(cap_budget, disk_budget), extra_bytes=extra_bytes
        )
        if need <= 0:
            return list(incoming)
        self._raise_alarm("disk_full" if disk_budget < cap_budget else "over_cap_evicting")
        kept, _ = self._evict_by_policy(need, incoming, for_incoming=for_incoming)
        return kept

    def evict(self, need_bytes: int) -> int:
        """Delete stored records worth about ``need_bytes`` by policy (see
        :mod:`heatgate.buffer.eviction`). Counted per stream as ``evicted``. Returns rows deleted."""
        _, deleted = self._evict_by_policy(need_bytes, (), for_incoming=False)
        return deleted

    def _evict_by_policy(
        self, need_bytes: int, incoming: Sequence[NewRecord], *, for_incoming: bool
    ) -> tuple[list[NewRecord], int]:
        """Make ``need_bytes`` of room by the policy of :func:`heatgate.buffer.eviction.plan_eviction`,
        taking stored rows and ``incoming`` records (not yet inserted: the newest) as one
        population. Every row deleted and every incoming record dropped is counted as
        ``evicted``. Returns the incoming records to insert and the rows deleted."""
        self.begin()
        candidates = [
            Candidate(index, r.stream, r.priority, r.created_s, _record_bytes(r), incoming=True)
            for index, r in enumerate(incoming)
        ]
        dropped: set[int] = set()
        evicted: dict[str, int] = {}
        batch: list[int] = []
        deleted = 0
        plan = plan_eviction(
            _StoredRows(self.conn, self._protected),
            candidates,
            need_bytes,
            protected_streams=self._protected,
            for_incoming=for_incoming,
        )
        for victim in plan:
            if victim.incoming and victim.stream in self._protected:
                self._refuse(incoming[victim.key])  # rule 4: refused, never stored over another
                dropped.add(victim.key)
                continue
            evicted[victim.stream] = evicted.get(victim.stream, 0) + 1
            if victim.incoming:
                dropped.add(victim.key)
                continue
            batch.append(victim.key)
            if len(batch) >= _DELETE_BATCH:
                deleted += self._delete_seqs(batch)
                batch = []
        deleted += self._delete_seqs(batch)
        for stream, count in evicted.items():
            self._count(stream, "evicted", count)
        return [r for index, r in enumerate(incoming) if index not in dropped], deleted

    def _refuse(self, record: NewRecord) -> None:
        """A protected record there is no room for: counted as ``rejected``, and its put raises
        :class:`RecordsNotStored` (:meth:`take_not_stored`)."""
        self._count(record.stream, "rejected", 1)  # in the transaction: a rollback undoes it with the rest
        self._not_stored[record.id] = record.stream
        self._raise_alarm("disk_full_records_rejected")

    def _delete_seqs(self, seqs: Sequence[int]) -> int:
        if not seqs:
            return 0
        marks = ",".join("?" * len(seqs))
        ids = [rid for (rid,) in self.conn.execute(f"DELETE FROM records WHERE seq IN ({marks}) RETURNING id", seqs)]
        self._inflight.difference_update(ids)
        return len(seqs)

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
            "buffer.disk_full_records_not_stored",
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
        return self._state.read(key)

    def set_state(self, key: str, value: bytes | None) -> None:
        self.begin()
        self._state.write(key, value)
        self.commit()

    def export_all(self) -> list[StoredRecord]:
        """Every committed record that decrypts (failures are quarantined), oldest first."""
        out: list[StoredRecord] = []
        bad: list[tuple[int, str]] = []
        rows = self.conn.execute(
            f"SELECT {_SELECT_COLUMNS} FROM records WHERE seq <= ? ORDER BY created_s, seq", (self.committed_seq,)
        ).fetchall()
        for seq, rid, stream, route, priority, created_s, number, sealed, form in rows:
            plain = self._decrypt(rid, stream, route, priority, created_s, number, sealed, form)
            if plain is None:
                bad.append((seq, stream))
                continue
            out.append(_stored_record(rid, stream, route, priority, created_s, form, plain))
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


class _StoredRows:
    """The stored rows as :class:`heatgate.buffer.eviction.Inventory`, read in pages in keyset
    order on the ``records_lane`` index. A page is read to its end (or to ``want_bytes``) and
    its cursor closed before any row is handed out: the store deletes what the planner names
    while the planner goes on, and never under a live cursor."""

    _PAGE_ROWS = 1000

    def __init__(self, conn: sqlite3.Connection, protected_streams: frozenset[str]) -> None:
        self._conn = conn
        self._streams = sorted(protected_streams)

    def _stream_filter(self, protected: bool) -> str:
        if not self._streams:
            return " AND 0" if protected else ""
        return f" AND stream {'IN' if protected else 'NOT IN'} ({','.join('?' * len(self._streams))})"

    def priorities(self, *, protected: bool) -> list[int]:
        # Every stored priority (a superset, as the protocol allows): a scan of the lane index,
        # without a look-up of each row's stream.
        return [int(p) for (p,) in self._conn.execute("SELECT DISTINCT priority FROM records")]

    def oldest_first(self, priority: int, *, protected: bool, want_bytes: int) -> Iterator[Candidate]:
        sql = (
            "SELECT seq, stream, created_s, length(sealed) FROM records"
            " WHERE priority = ? AND (created_s, seq) > (?, ?)"
            + self._stream_filter(protected)
            + f" ORDER BY created_s, seq LIMIT {self._PAGE_ROWS}"
        )
        after: tuple[float, int] = (float("-inf"), -1)
        while True:
            page: list[Candidate] = []
            acc = 0
            cursor = self._conn.execute(sql, [priority, *after, *self._streams])
            try:
                for seq, stream, created_s, size in cursor:
                    page.append(Candidate(seq, stream, priority, created_s, size + ROW_OVERHEAD_BYTES))
                    acc += size + ROW_OVERHEAD_BYTES
                    if acc >= want_bytes:
                        break
            finally:
                cursor.close()
            yield from page
            if not page or (acc < want_bytes and len(page) < self._PAGE_ROWS):
                return  # nothing more stored
            after = (page[-1].created_s, page[-1].key)
            want_bytes = max(1, want_bytes - acc)


def _stored_record(
    rid: str, stream: str, route: str, priority: int, created_s: float, form: int, plain: bytes
) -> StoredRecord:
    """A decrypted row as the buffer hands it out: its body, and its wire form when stored as one."""
    wire, payload = (None, plain) if form == _FORM_BODY else (plain, body_of(rid, plain))
    return StoredRecord(
        id=rid, stream=stream, route=route, priority=priority, created_s=created_s, payload=payload, wire=wire
    )
