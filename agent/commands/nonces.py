"""Nonces of accepted envelopes, remembered until their envelope can no longer be accepted.

The set lives in the buffer's encrypted key-value state (``Buffer.get_state/set_state``, key
``commands.nonces``), so a replay is refused after a restart too. Every accepted nonce is
written through before the command runs.

Bounded: at most ``max_entries``. An entry is dropped once ``keep_until_s`` (the envelope's
``expires_at`` plus the clock-skew tolerance) has passed. When the store is full of live
entries, the ones that expire first are evicted and the store remembers the latest expiry it
evicted as its *floor*: from then on an envelope whose ``keep_until_s`` is not after the floor is
refused as possibly replayed. A flood can therefore delay genuine commands (they must be re-issued
with a later expiry) but never let a replay through.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final, Protocol

import msgspec

from heatgate.agent.commands.errors import CommandError
from heatgate.buffer.errors import BufferFault

__all__ = ["NonceStore", "NonceStoreError", "StateStore"]

STATE_KEY: Final = "commands.nonces"
DEFAULT_MAX_ENTRIES: Final = 4096


class StateStore(Protocol):
    """The part of :class:`buffer.api.Buffer` the nonce store uses."""

    async def get_state(self, key: str) -> bytes | None: ...

    async def set_state(self, key: str, value: bytes | None) -> None: ...


class NonceStoreError(CommandError):
    """The nonce set could not be read or written."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Document(msgspec.Struct, kw_only=True):
    v: int = 1
    floor_s: float = 0.0
    seen: dict[str, float] = {}


_decoder: Final = msgspec.json.Decoder(_Document)


class NonceStore:
    """Create with :meth:`load`. ``remember`` is atomic on the event loop."""

    def __init__(
        self, state: StateStore, document: _Document, *, key: str, max_entries: int, clock: Callable[[], float]
    ) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._state = state
        self._doc = document
        self._key = key
        self._max_entries = max_entries
        self._clock = clock
        self._lock = asyncio.Lock()

    @classmethod
    async def load(
        cls,
        state: StateStore,
        *,
        key: str = STATE_KEY,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Callable[[], float] = time.time,
    ) -> NonceStore:
        """Read the persisted set. An unreadable document is an error (failing closed): the
        caller must not accept commands without knowing which nonces were used."""
        try:
            raw = await state.get_state(key)
        except BufferFault as exc:
            raise NonceStoreError(f"reading the nonce store failed: {exc}") from exc
        document = _Document()
        if raw is not None:
            try:
                document = _decoder.decode(raw)
            except msgspec.MsgspecError as exc:
                raise NonceStoreError(f"the stored nonce set is unreadable: {exc}") from None
        return cls(state, document, key=key, max_entries=max_entries, clock=clock)

    def __len__(self) -> int:
        return len(self._doc.seen)

    @property
    def floor_s(self) -> float:
        return self._doc.floor_s

    def seen(self, nonce: str) -> bool:
        """True if ``nonce`` is remembered (and still live)."""
        until = self._doc.seen.get(nonce)
        return until is not None and until >= self._clock()

    async def remember(self, nonce: str, keep_until_s: float) -> bool:
        """Record ``nonce`` until ``keep_until_s``. False if it was seen before, or if it is not
        later than the floor (see the module docstring); True once it is persisted. Raises
        :class:`NonceStoreError` if it cannot be persisted (the caller must then not act)."""
        async with self._lock:
            now = self._clock()
            seen = self._doc.seen
            if nonce in seen and seen[nonce] >= now:
                return False
            if keep_until_s <= self._doc.floor_s:
                return False
            for old in [n for n, until in seen.items() if until < now]:
                del seen[old]
            if len(seen) >= self._max_entries:
                for old, until in sorted(seen.items(), key=lambda item: item[1])[: len(seen) - self._max_entries + 1]:
                    del seen[old]
                    self._doc.floor_s = max(self._doc.floor_s, until)
                if keep_until_s <= self._doc.floor_s:
                    await self._save()
                    return False
            seen[nonce] = keep_until_s
            await self._save()
            return True

    async def _save(self) -> None:
        try:
            await self._state.set_state(self._key, msgspec.json.encode(self._doc))
        except BufferFault as exc:
            raise NonceStoreError(f"writing the nonce store failed: {exc}") from exc
