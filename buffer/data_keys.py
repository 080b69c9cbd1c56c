"""Data keys: one random 256-bit key per (stream, epoch), stored only wrapped.

``data_keys(epoch, stream, start_s, end_s, cipher, wrapped)``: the key is wrapped by a key
derived from the master key (:meth:`heatgate.buffer.keys.DerivedKeys.wrap`), with associated
data binding its epoch number, stream, window and cipher. Unwrapped keys are cached for the
connection's life; a key that fails to unwrap is cached as ``cipher=None`` (its rows go to
quarantine, and it is never used for a new record). Destroying a key (retention, purge) is the
caller's ``DELETE`` plus :meth:`DataKeys.forget`.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass

from heatgate.buffer.aead import RecordCipher, associated_data
from heatgate.buffer.epochs import default_epoch_s, epoch_window
from heatgate.buffer.keys import DerivedKeys
from heatgate.sodium import AuthenticationFailed

__all__ = ["DataKeys", "Epoch", "key_ad"]

_DATA_KEY_BYTES = 32


@dataclass
class Epoch:
    epoch: int
    stream: str
    start_s: float
    end_s: float
    cipher: RecordCipher | None
    """None when the wrapped key failed to authenticate: its rows go to quarantine."""


def key_ad(number: int, stream: str, start_s: float, end_s: float, cipher: str) -> bytes:
    """The associated data a wrapped data key is bound to."""
    return associated_data("data-key", stream, cipher, 0, start_s, number) + repr(end_s).encode()


class DataKeys:
    """The data keys of one connection, created on demand and cached unwrapped."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        keys: DerivedKeys,
        *,
        cipher: str,
        retention_s: Mapping[str, float],
        epoch_s: Mapping[str, float],
    ) -> None:
        self._conn = conn
        self._keys = keys
        self._cipher_name = cipher
        self._retention_s = retention_s
        self._epoch_s = epoch_s
        self._epochs: dict[int, Epoch] = {}
        self._current: dict[str, Epoch] = {}

    def clear(self) -> None:
        """Drop the cache (another process, or a rollback, may have destroyed keys)."""
        self._epochs.clear()
        self._current.clear()

    def for_record(self, stream: str, created_s: float, now_s: float) -> Epoch | None:
        """The epoch whose key encrypts a new record of ``stream`` created at ``created_s``;
        created (in the caller's transaction) if needed. None if that epoch is already past the
        stream's retention: such a record is never stored."""
        current = self._current.get(stream)
        if current is not None and current.start_s <= created_s < current.end_s:
            return current
        retention = self._retention_s.get(stream)
        row = self._conn.execute(
            "SELECT epoch, start_s, end_s, cipher, wrapped FROM data_keys"
            " WHERE stream = ? AND start_s <= ? AND end_s > ? ORDER BY epoch DESC LIMIT 1",
            (stream, created_s, created_s),
        ).fetchone()
        if row is not None:
            epoch = self._from_row(stream, *row)
            if epoch.cipher is None:
                row = None  # a key that fails to unwrap is not used for new records
        if row is None:
            start_s, end_s = epoch_window(created_s, self._epoch_s.get(stream) or default_epoch_s(retention))
            if retention is not None and start_s + retention <= now_s:
                return None  # already past retention: never stored
            data_key = os.urandom(_DATA_KEY_BYTES)
            cur = self._conn.execute(
                "INSERT INTO data_keys (stream, start_s, end_s, cipher, wrapped) VALUES (?, ?, ?, ?, x'')",
                (stream, start_s, end_s, self._cipher_name),
            )
            number = int(cur.lastrowid or 0)
            wrapped = self._keys.wrap(data_key, key_ad(number, stream, start_s, end_s, self._cipher_name))
            self._conn.execute("UPDATE data_keys SET wrapped = ? WHERE epoch = ?", (wrapped, number))
            epoch = Epoch(number, stream, start_s, end_s, RecordCipher(self._cipher_name, data_key))
            self._epochs[number] = epoch
        if current is None or epoch.start_s >= current.start_s:
            self._current[stream] = epoch
        return epoch

    def by_number(self, number: int) -> Epoch | None:
        """The epoch ``number`` (its key unwrapped, or ``cipher=None``), or None if destroyed."""
        cached = self._epochs.get(number)
        if cached is not None:
            return cached
        row = self._conn.execute(
            "SELECT stream, start_s, end_s, cipher, wrapped FROM data_keys WHERE epoch = ?", (number,)
        ).fetchone()
        if row is None:
            return None
        stream, start_s, end_s, cipher, wrapped = row
        return self._from_row(stream, number, start_s, end_s, cipher, wrapped)

    def forget(self, number: int) -> None:
        """The key of epoch ``number`` was deleted: drop it from the cache."""
        epoch = self._epochs.pop(number, None)
        if epoch is not None and self._current.get(epoch.stream) is epoch:
            del self._current[epoch.stream]

    def forget_stream(self, stream: str) -> None:
        self._current.pop(stream, None)

    def _from_row(self, stream: str, number: int, start_s: float, end_s: float, cipher: str, wrapped: bytes) -> Epoch:
        cached = self._epochs.get(number)
        if cached is not None:
            return cached
        try:
            data_key = self._keys.unwrap(wrapped, key_ad(number, stream, start_s, end_s, cipher))
            epoch = Epoch(number, stream, start_s, end_s, RecordCipher(cipher, data_key))
        except (AuthenticationFailed, ValueError):
            epoch = Epoch(number, stream, start_s, end_s, None)
        self._epochs[number] = epoch
        return epoch
