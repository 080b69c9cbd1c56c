"""The asyncio face of the buffer: one writer thread owns the SQLite connection.

Every call is queued to the writer thread and awaited on an asyncio future that the thread
resolves with ``loop.call_soon_threadsafe``. Nothing on the event loop ever blocks on SQLite.

Durability, exactly (``journal_mode=WAL``, ``synchronous=NORMAL``):

* ``put`` returns only after its records are **committed**. Records are inserted into an open
  transaction that is committed ``commit_interval_s`` after its first write (default 1 s, so an
  SD card sees one WAL append per second rather than one per record); a put that contains a
  record of an ``immediate_streams`` stream (``service``: fault codes) commits the transaction
  at once, and so do purges, erasure, retention sweeps and state changes. On a full disk a
  record of an unprotected stream may instead be evicted by policy (counted); a put whose
  ``service`` records could not be stored at all raises :class:`buffer.errors.RecordsNotStored`
  (see docs/buffer.md, "What put promises on a full disk").
* With ``synchronous=NORMAL`` in WAL mode, a commit is written to the WAL but the WAL is fsynced
  only at checkpoints. A ``kill -9`` of the process loses nothing that was committed (the OS
  holds the WAL pages). A **power cut** or kernel crash can lose the transactions committed
  since the last WAL fsync (the last checkpoint, which runs at least every
  ``wal_budget_bytes / 2`` of WAL and after every purge/sweep): those records were acknowledged
  to the pipeline but vanish; the database is never corrupted by it (SQLite discards the torn
  WAL tail). Nothing that was not yet committed was promised: a put still waiting for its
  commit when the power goes is lost too, and its caller never got a return.
* ``ack`` deletes in the open transaction and returns without waiting for the commit: if the
  process dies before the commit, the record is sent again with the same id (at least once;
  the backend de-duplicates by id).
* In-flight state (taken, not yet acked or released) is memory only: after a restart every
  unacknowledged record is handed out again, with its id.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from heatgate.buffer.aead import DEFAULT_CIPHER, check_cipher
from heatgate.buffer.api import BufferStats, NewRecord, StoredRecord
from heatgate.buffer.batch import TakenBatch
from heatgate.buffer.errors import BufferClosed, BufferFault, RecordsNotStored, StoreError
from heatgate.buffer.store import Store

__all__ = ["AsyncBuffer", "open_buffer"]

T = TypeVar("T")

_PUT = "put"
_CALL = "call"
_CLOSE = "close"


async def open_buffer(
    path: Path,
    master_key: bytes,
    *,
    cap_bytes: int,
    commit_interval_s: float = 1.0,
    cipher: str = DEFAULT_CIPHER,
    retention_s: Mapping[str, float],
    epoch_s: Mapping[str, float] | None = None,
    immediate_streams: frozenset[str] = frozenset({"service"}),
    clock: Callable[[], float] = time.time,
    local_command: bool = False,
) -> AsyncBuffer:
    """Open (or create) the encrypted buffer at ``path`` and start its writer thread.

    ``retention_s`` maps each stream to its retention; ``epoch_s`` overrides the key-epoch
    length per stream (default: see :mod:`buffer.epochs`). ``immediate_streams`` commit at once
    and are evicted last. ``clock`` (seconds since the epoch) drives retention and is
    injectable for tests. A first retention sweep runs before this returns. ``local_command``:
    a short-lived process (the CLI) that may write while the agent runs; it goes ahead of the
    agent's writer until it closes the buffer (see :mod:`buffer.turnstile`).

    Raises (all from :mod:`heatgate.buffer.errors`, all :class:`BufferFault`)
    :class:`MasterKeyMismatch` (database untouched) for a wrong key, :class:`UnknownCipher`,
    :class:`SchemaTooNew`, :class:`StoreError`, or :class:`BufferBusy` (another process kept
    the buffer locked). A corrupt file
    does not raise: it is renamed aside and reported in ``stats().alarms``.
    """
    check_cipher(cipher)
    if cap_bytes < 64 * 1024:
        raise StoreError("open", f"cap_bytes {cap_bytes} is too small (at least 65536)")

    def opener() -> Store:
        store = Store.open(
            Path(path),
            master_key,
            cap_bytes=cap_bytes,
            cipher=cipher,
            retention_s=retention_s,
            epoch_s=epoch_s,
            protected_streams=immediate_streams,
            clock=clock,
            local_command=local_command,
        )
        try:
            store.sweep(None)
        except BaseException:
            store.close()
            raise
        return store

    buffer = AsyncBuffer(
        asyncio.get_running_loop(), commit_interval_s=commit_interval_s, immediate_streams=immediate_streams
    )
    await buffer._start(opener)
    return buffer


class _Op:
    __slots__ = ("fn", "future", "kind", "records")

    def __init__(
        self,
        kind: str,
        future: asyncio.Future[Any],
        fn: Callable[[Store], Any] | None = None,
        records: Sequence[NewRecord] = (),
    ) -> None:
        self.kind = kind
        self.future = future
        self.fn = fn
        self.records = records


class AsyncBuffer:
    """Implements :class:`buffer.api.Buffer`; create with :func:`open_buffer`."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, *, commit_interval_s: float, immediate_streams: frozenset[str]
    ) -> None:
        self._loop = loop
        self._commit_interval_s = commit_interval_s
        self._immediate = immediate_streams
        self._queue: queue.Queue[_Op] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._closed = False

    async def _start(self, opener: Callable[[], Store]) -> None:
        ready: asyncio.Future[Any] = self._loop.create_future()
        self._thread = threading.Thread(
            target=self._run, args=(opener, ready), name="heatgate-buffer-writer", daemon=True
        )
        self._thread.start()
        try:
            await ready
        except BaseException:
            self._closed = True
            self._thread.join()
            raise

    # ---- the Buffer protocol ------------------------------------------------------------

    async def put(self, records: Sequence[NewRecord]) -> None:
        """Encrypt and store; returns once the records are committed (see the module docstring)."""
        if not records:
            return
        await self._submit(_PUT, records=list(records))

    async def take(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> list[StoredRecord]:
        """Up to ``limit`` committed records not in flight, lowest priority number first, then
        oldest; records of ``exclude_streams`` are skipped. They stay stored until ack/release."""
        result: list[StoredRecord] = await self._call(lambda s: s.take(limit, exclude_streams))
        return result

    async def take_batch(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> TakenBatch:
        """What :meth:`take` hands out, as columns (:class:`heatgate.buffer.batch.TakenBatch`),
        built by the writer thread as it decrypts each row."""
        result: TakenBatch = await self._call(lambda s: s.take_batch(limit, exclude_streams))
        return result

    async def ack(self, ids: Sequence[str]) -> None:
        """Delete acknowledged records (counted as published). ``ids`` is read on the writer
        thread (the publisher hands over views of its batches: no step per id on the loop);
        the caller does not change it afterwards."""
        await self._call(lambda s: s.ack(list(ids)))

    async def release(self, ids: Sequence[str]) -> None:
        """Hand these out again on a later take, with the same ids (read as for :meth:`ack`)."""
        await self._call(lambda s: s.release(list(ids)))

    async def purge_stream(self, stream: str) -> int:
        """Delete the stream's records, destroy its data keys, truncate the WAL; rows removed."""
        result: int = await self._call(lambda s: s.purge_stream(stream))
        return result

    async def erase_all(self) -> int:
        """Delete every record and destroy every data key; the state store is kept. Rows removed."""
        result: int = await self._call(lambda s: s.erase_all())
        return result

    async def stats(self) -> BufferStats:
        result: BufferStats = await self._call(lambda s: s.stats())
        return result

    async def get_state(self, key: str) -> bytes | None:
        """A value of the small encrypted key-value store, or None."""
        result: bytes | None = await self._call(lambda s: s.get_state(key))
        return result

    async def set_state(self, key: str, value: bytes | None) -> None:
        """Set (or with None delete) a state value; committed before this returns."""
        await self._call(lambda s: s.set_state(key, value))

    async def sweep(self, now_s: float | None = None) -> dict[str, int]:
        """Retention: delete expired epochs' rows and destroy their data keys; rows per stream."""
        result: dict[str, int] = await self._call(lambda s: s.sweep(now_s))
        return result

    async def export_all(self) -> list[StoredRecord]:
        """Every committed record that decrypts, oldest first (for the privacy export)."""
        result: list[StoredRecord] = await self._call(lambda s: s.export_all())
        return result

    async def count(self, stream: str | None = None) -> int:
        """Stored records (of one stream, or all)."""
        result: int = await self._call(lambda s: s.count(stream))
        return result

    async def close(self) -> None:
        """Commit what is pending, checkpoint, close the file, end the writer thread."""
        if self._closed:
            return
        await self._submit(_CLOSE)
        self._closed = True
        if self._thread is not None:
            self._thread.join()

    # ---- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[[Store], T]) -> T:
        result: T = await self._submit(_CALL, fn=fn)
        return result

    async def _submit(
        self, kind: str, *, fn: Callable[[Store], Any] | None = None, records: Sequence[NewRecord] = ()
    ) -> Any:
        if self._closed or self._thread is None or not self._thread.is_alive():
            raise BufferClosed()
        future: asyncio.Future[Any] = self._loop.create_future()
        self._queue.put(_Op(kind, future, fn, records))
        return await future

    def _resolve(self, future: asyncio.Future[Any], result: Any = None, exc: BaseException | None = None) -> None:
        def settle() -> None:
            if future.done():
                return
            if exc is not None:
                future.set_exception(exc)
            else:
                future.set_result(result)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:
            pass  # the loop is closed: nobody is waiting any more

    def _run(self, opener: Callable[[], Store], ready: asyncio.Future[Any]) -> None:
        try:
            store = opener()
        except BaseException as exc:
            self._resolve(ready, exc=exc)
            return
        self._resolve(ready)
        # Puts whose records are in the open transaction, with their ids.
        waiting: list[tuple[asyncio.Future[Any], frozenset[str]]] = []
        deadline: float | None = None

        def settle_waiting(exc: BaseException | None) -> None:
            # A full disk may have kept some protected records out (and only those): their puts
            # fail with the ids that were theirs; every other put was committed (or its records
            # evicted by policy and counted).
            not_stored = store.take_not_stored()
            for future, ids in waiting:
                lost = ids & not_stored.ids if not_stored is not None else frozenset()
                if lost and exc is None:
                    assert not_stored is not None
                    per_stream: dict[str, int] = {}
                    for rid in lost:
                        per_stream[store_streams[rid]] = per_stream.get(store_streams[rid], 0) + 1
                    self._resolve(future, exc=RecordsNotStored(lost, per_stream))
                else:
                    self._resolve(future, exc=exc)
                for rid in ids:
                    store_streams.pop(rid, None)
            waiting.clear()

        store_streams: dict[str, str] = {}  # id -> stream of the waiting puts' records

        while True:
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                op: _Op | None = self._queue.get(timeout=timeout)
            except queue.Empty:
                op = None
            if op is None or op.kind == _CLOSE:
                try:
                    store.commit()
                    settle_waiting(None)
                except BufferFault as exc:
                    settle_waiting(exc)
                deadline = None
                if op is None:
                    continue
                try:
                    store.close()
                    self._resolve(op.future)
                except Exception as exc:
                    self._resolve(op.future, exc=exc)
                return
            failure: BaseException | None = None
            commit_now = False
            try:
                if op.kind == _PUT:
                    store.put(op.records)
                    waiting.append((op.future, frozenset(r.id for r in op.records)))
                    store_streams.update((r.id, r.stream) for r in op.records)
                    commit_now = any(r.stream in self._immediate for r in op.records)
                else:
                    assert op.fn is not None
                    self._resolve(op.future, op.fn(store))
            except Exception as exc:  # the thread's boundary: the caller gets the error
                failure = exc
                self._resolve(op.future, exc=exc)
            if store.in_tx and failure is None and (commit_now or self._commit_interval_s <= 0):
                try:
                    store.commit()
                except BufferFault as exc:
                    failure = exc
            if not store.in_tx:
                # Committed (or rolled back, if something failed) as a side effect of the op.
                settle_waiting(failure)
                deadline = None
            elif deadline is None:
                deadline = time.monotonic() + self._commit_interval_s
