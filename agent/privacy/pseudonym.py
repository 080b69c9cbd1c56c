"""Keyed pseudonyms: HMAC-SHA256 with a key per stream (pseudonymisation domain) and epoch.

A meter serial or an equipment id lives in a small space: an unkeyed hash of it is reversed
by trying them all. A pseudonym here is therefore ``HMAC-SHA256(key[domain, epoch], value)``,
truncated to 128 bits and written in lowercase base32 (26 characters). The keys are made on
the device with :func:`os.urandom`, kept in the buffer's encrypted state, and never leave it.

Epochs (``pseudonym_epoch_days``, default 90) make pseudonyms unlinkable over time: each
domain's key for epoch ``e + 1`` is derived from epoch ``e``'s by a one-way step (HMAC), and
the stored key is advanced to the current epoch, so the device can make the pseudonyms of
now and later but no longer those of epochs gone by. Domains have independent random keys,
so one device's pseudonyms cannot be linked across streams either.

Use: ``keys = await PseudonymKeys.load(buffer, epoch_days=90)`` then
``keys.pseudonym("analytics", value, ts)``; ``await keys.ensure(buffer)`` advances and
persists (call it now and then, e.g. daily); ``await PseudonymKeys.reset(buffer)`` makes new
keys (after an erasure).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from heatgate.agent.privacy.errors import PseudonymError
from heatgate.agent.privacy.policy import STREAMS

__all__ = ["STATE_KEY", "KeyStore", "PseudonymError", "PseudonymKeys"]

STATE_KEY = "privacy.pseudonym-keys"
_KEY_BYTES = 32
_USE = b"heatgate/pseudonym/use"
_NEXT = b"heatgate/pseudonym/next"
_CACHE_MAX = 65536


class KeyStore(Protocol):
    """Small encrypted key-value state; :class:`buffer.api.Buffer` is one."""

    async def get_state(self, key: str) -> bytes | None: ...

    async def set_state(self, key: str, value: bytes | None) -> None: ...


class PseudonymKeys:
    """Per-domain key chains, each at a base epoch; derives the key of any later epoch."""

    def __init__(self, chains: dict[str, tuple[int, bytes]], *, epoch_days: int) -> None:
        if epoch_days < 1:
            raise ValueError("epoch_days must be >= 1")
        self._chains = dict(chains)
        self.epoch_days = epoch_days
        self._epoch_s = float(epoch_days * 86400)
        self._use_keys: dict[tuple[str, int], bytes] = {}
        self._cache: dict[tuple[str, int, str], str] = {}

    # ---- persistence ----------------------------------------------------------------------

    @classmethod
    async def load(
        cls,
        store: KeyStore,
        *,
        epoch_days: int = 90,
        domains: Iterable[str] = STREAMS,
        clock: Callable[[], float] = time.time,
    ) -> PseudonymKeys:
        """Read the keys from ``store``, creating missing ones and advancing every chain to the
        current epoch; what changed is written back before this returns."""
        raw = await store.get_state(STATE_KEY)
        chains: dict[str, tuple[int, bytes]] = {}
        if raw is not None:
            try:
                document = json.loads(raw)
                if document.get("epoch_days") == epoch_days:
                    for name, entry in document["domains"].items():
                        key = bytes.fromhex(entry["key"])
                        if len(key) != _KEY_BYTES:
                            raise ValueError("bad key length")
                        chains[name] = (int(entry["epoch"]), key)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise PseudonymError(f"stored pseudonym keys unreadable: {exc}") from None
        keys = cls(chains, epoch_days=epoch_days)
        now_epoch = keys.epoch(clock())
        changed = raw is None or not chains
        for domain in domains:
            if domain not in keys._chains:
                keys._chains[domain] = (now_epoch, os.urandom(_KEY_BYTES))
                changed = True
        changed = keys._advance(now_epoch) or changed
        if changed:
            await keys.save(store)
        return keys

    ensure = load
    """Alias of :meth:`load`: the keys exist and are at the current epoch after it."""

    @classmethod
    async def reset(
        cls,
        store: KeyStore,
        *,
        epoch_days: int = 90,
        domains: Iterable[str] = STREAMS,
        clock: Callable[[], float] = time.time,
    ) -> PseudonymKeys:
        """Destroy the stored keys and make new ones (no old pseudonym can be made again)."""
        await store.set_state(STATE_KEY, None)
        return await cls.load(store, epoch_days=epoch_days, domains=domains, clock=clock)

    async def save(self, store: KeyStore) -> None:
        document = {
            "version": 1,
            "epoch_days": self.epoch_days,
            "domains": {name: {"epoch": epoch, "key": key.hex()} for name, (epoch, key) in self._chains.items()},
        }
        await store.set_state(STATE_KEY, json.dumps(document, sort_keys=True).encode())

    async def advance(self, store: KeyStore, now_s: float) -> bool:
        """Advance every chain to ``now_s``'s epoch and persist; True if anything moved."""
        if self._advance(self.epoch(now_s)):
            await self.save(store)
            return True
        return False

    def _advance(self, epoch: int) -> bool:
        moved = False
        for name, (base, key) in list(self._chains.items()):
            if epoch > base:
                for _ in range(epoch - base):
                    key = hmac.digest(key, _NEXT, "sha256")
                self._chains[name] = (epoch, key)
                moved = True
        if moved:
            self._use_keys.clear()
            self._cache.clear()
        return moved

    # ---- pseudonyms -----------------------------------------------------------------------

    def epoch(self, ts: float) -> int:
        """The epoch number a time falls in."""
        return int(ts // self._epoch_s)

    def base_epoch(self, domain: str) -> int:
        return self._chains[domain][0]

    def _use_key(self, domain: str, epoch: int) -> bytes:
        try:
            return self._use_keys[(domain, epoch)]
        except KeyError:
            pass
        try:
            base, key = self._chains[domain]
        except KeyError:
            raise PseudonymError(f"no key for domain {domain!r}") from None
        # Times before the chain's base epoch use the base: the keys of epochs gone are destroyed.
        for _ in range(max(0, epoch - base)):
            key = hmac.digest(key, _NEXT, "sha256")
        use = hmac.digest(key, _USE, "sha256")
        self._use_keys[(domain, max(epoch, base))] = use
        self._use_keys[(domain, epoch)] = use
        return use

    def pseudonym(self, domain: str, value: str, ts: float) -> str:
        """The keyed pseudonym of ``value`` in ``domain`` for the epoch of ``ts``."""
        epoch = self.epoch(ts)
        cache_key = (domain, epoch, value)
        found = self._cache.get(cache_key)
        if found is not None:
            return found
        mac = hmac.new(self._use_key(domain, epoch), domain.encode() + b"\x00" + value.encode(), hashlib.sha256)
        result = base64.b32encode(mac.digest()[:16]).decode().rstrip("=").lower()
        if len(self._cache) >= _CACHE_MAX:
            self._cache.clear()
        self._cache[cache_key] = result
        return result

    def describe(self) -> dict[str, int]:
        """Base epoch per domain (no key material)."""
        return {name: epoch for name, (epoch, _key) in self._chains.items()}
