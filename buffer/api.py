"""What the rest of the agent may ask of the buffer.

The asyncio side never touches SQLite: it calls an object implementing :class:`Buffer`, whose
methods hand work to the one writer thread that owns the connection.

Records hold plaintext only in memory; on disk each payload is AEAD ciphertext whose
associated data binds the record id, the stream and the key epoch.

The errors it raises are in :mod:`heatgate.buffer.errors` (root :class:`~heatgate.buffer.errors.BufferFault`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

from heatgate.buffer.batch import TakenBatch

__all__ = ["Buffer", "BufferStats", "NewRecord", "StoredRecord", "StreamStats", "TakenBatch"]


class NewRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A record to store. ``id`` is assigned by the producer (time-ordered, unique) and is kept
    for ever after, including on every re-send, so that the backend can de-duplicate."""

    id: str
    stream: str
    route: str
    """Topic below the gateway's prefix: ``service/fault``, ``telemetry``,
    ``analytics/heat-pump``. Stored in clear (it names a purpose, never a person or a device)
    and bound into the AEAD associated data."""
    priority: int
    """Lane: lower number = published first (service = 0)."""
    created_s: float
    payload: bytes
    """Plaintext JSON of the record body; encrypted before it touches the disk."""


class StoredRecord(msgspec.Struct, frozen=True, gc=False, kw_only=True):
    """A committed record handed out for publishing, decrypted."""

    id: str
    stream: str
    route: str
    priority: int
    created_s: float
    payload: bytes
    """The body, as :attr:`NewRecord.payload` was."""
    wire: bytes | None = None
    """The record's wire form ``{"id":…,"body":…}`` (:func:`heatgate.buffer.wire.wire_form`), as
    committed: what the publisher joins into a message. None where the buffer has only the body
    (rows written before the wire form was stored; in-memory buffers): the publisher makes it."""


class StreamStats(msgspec.Struct, kw_only=True):
    queued: int = 0
    oldest_created_s: float | None = None
    published: int = 0
    evicted: int = 0
    expired: int = 0
    purged: int = 0
    auth_failures: int = 0
    rejected: int = 0
    """Records of a protected stream that a full disk kept out (their put raised
    :class:`buffer.errors.RecordsNotStored`); zero unless the disk was full with nothing left
    to evict."""


class BufferStats(msgspec.Struct, kw_only=True):
    file_bytes: int
    cap_bytes: int
    streams: dict[str, StreamStats]
    alarms: list[str]
    key_epochs: dict[str, int]


class Buffer(Protocol):
    async def put(self, records: Sequence[NewRecord]) -> None:
        """Queue records for commit. Returns once they are committed (service-stream records
        commit at once; others within ``commit_interval_s``). On a full disk with nothing left
        to evict, raises ``buffer.errors.RecordsNotStored`` for service records it could not
        store (unprotected records are evicted by policy and counted instead)."""
        ...

    async def take(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> list[StoredRecord]:
        """Committed records not already in flight: lowest priority number first, oldest first.
        They stay stored (and in flight) until ``ack`` or ``release``."""
        ...

    async def take_batch(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> TakenBatch:
        """What :meth:`take` hands out (same order, same in-flight marking), as columns: ids,
        wire forms, running sizes and runs of stream and route (:mod:`heatgate.buffer.batch`).
        The publisher drains with this: no object per record to read back."""
        ...

    async def ack(self, ids: Sequence[str]) -> None:
        """The broker acknowledged these: delete them."""
        ...

    async def release(self, ids: Sequence[str]) -> None:
        """Not acknowledged (connection lost, refused): hand them out again later, same ids."""
        ...

    async def purge_stream(self, stream: str) -> int:
        """Delete every record of a stream and destroy its data keys; returns rows removed."""
        ...

    async def erase_all(self) -> int: ...

    async def stats(self) -> BufferStats: ...

    async def get_state(self, key: str) -> bytes | None:
        """Small encrypted key-value state (consent flags, command nonces)."""
        ...

    async def set_state(self, key: str, value: bytes | None) -> None: ...

    async def close(self) -> None: ...
