"""Record ids: unique, time-ordered, 26 characters (ULID layout, Crockford base32).

48 bits of milliseconds since the epoch, then 80 bits that are random for the first id of a
millisecond and incremented for the next ones, so that ids made by one process sort in the
order they were made. The id is assigned once, when the record is made, and kept on every
re-send: the backend de-duplicates by it.
"""

from __future__ import annotations

import os
import threading
import time

__all__ = ["IdGenerator", "id_time_s", "new_id"]

_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_DECODE = {c: i for i, c in enumerate(_ALPHABET)}
_RANDOM_MASK = (1 << 80) - 1


def _encode(value: int) -> str:
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return "".join(reversed(chars))


class IdGenerator:
    """Monotonic id source; thread-safe. ``clock_s`` is injectable for tests."""

    def __init__(self, clock_s: object = time.time) -> None:
        self._clock = clock_s
        self._lock = threading.Lock()
        self._last_ms = -1
        self._last_random = 0

    def new(self) -> str:
        now_ms = int(self._clock() * 1000)  # type: ignore[operator]
        with self._lock:
            if now_ms <= self._last_ms:
                # Same millisecond, or the clock went back: keep ordering by counting on.
                now_ms = self._last_ms
                self._last_random = (self._last_random + 1) & _RANDOM_MASK
                if self._last_random == 0:
                    now_ms += 1
            else:
                self._last_random = int.from_bytes(os.urandom(10), "big") >> 1
            self._last_ms = now_ms
            return _encode((now_ms << 80) | self._last_random)


_default = IdGenerator()


def new_id() -> str:
    return _default.new()


def id_time_s(record_id: str) -> float:
    """The creation time encoded in an id, in seconds since the epoch."""
    value = 0
    for char in record_id:
        value = (value << 5) | _DECODE[char]
    return (value >> 80) / 1000.0
