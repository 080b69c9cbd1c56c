"""The buffer's small key-value state (consent flags, command nonces), sealed at rest.

Each value is ChaCha20-Poly1305 under the state key (derived from the master key, see
:class:`heatgate.buffer.keys.DerivedKeys`) with a random nonce; the associated data binds the
entry's name, so a value moved to another name fails authentication. Stored as
``state(name, sealed = nonce || ciphertext || tag)``. The caller owns the transaction.
"""

from __future__ import annotations

import os
import sqlite3

from heatgate.buffer.errors import StoreError
from heatgate.sodium import AuthenticationFailed, ChaCha20Poly1305

__all__ = ["SealedState"]

_NONCE_BYTES = 12


class SealedState:
    """Reads and writes the ``state`` table of one connection."""

    def __init__(self, conn: sqlite3.Connection, state_key: bytes) -> None:
        self._conn = conn
        self._aead = ChaCha20Poly1305(state_key)

    def read(self, name: str) -> bytes | None:
        """The value of ``name``, or None; :class:`StoreError` if it fails authentication."""
        row = self._conn.execute("SELECT sealed FROM state WHERE name = ?", (name,)).fetchone()
        if row is None:
            return None
        sealed = bytes(row[0])
        try:
            return self._aead.decrypt(sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:], _state_ad(name))
        except AuthenticationFailed:
            raise StoreError("get_state", f"state entry {name!r} failed authentication") from None

    def write(self, name: str, value: bytes | None) -> None:
        """Write (or, with None, delete) ``name`` in the caller's open transaction."""
        if value is None:
            self._conn.execute("DELETE FROM state WHERE name = ?", (name,))
            return
        nonce = os.urandom(_NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, value, _state_ad(name))
        self._conn.execute("INSERT OR REPLACE INTO state (name, sealed) VALUES (?, ?)", (name, sealed))


def _state_ad(name: str) -> bytes:
    return b"heatgate-state\x00" + name.encode()
