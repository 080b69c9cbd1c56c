"""The customer's choices: objections, restrictions and consents, persisted encrypted.

The state lives as one JSON document under the key ``privacy.state`` of the buffer's
encrypted key-value state (:meth:`buffer.api.Buffer.get_state`). Every change is written
before the method returns and reports a :class:`Change` that the caller audits;
:mod:`agent.privacy.rights` does state change, purge and audit record together — use it.

Readers that must be fast (the pipeline, the publisher) look at frozen sets:
``objected_streams()``, ``restricted_streams()`` (the publisher's ``exclude_streams``),
``consents_given()``, and ``version``, which counts changes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from heatgate.agent.privacy.errors import PrivacyStateError
from heatgate.agent.privacy.pseudonym import KeyStore

__all__ = ["STATE_KEY", "Change", "PrivacyState", "PrivacyStateError"]

STATE_KEY = "privacy.state"


@dataclass(frozen=True, slots=True)
class Change:
    """What one call changed: ``event`` such as ``privacy.object``; ``changed`` is False when
    the state already was so (still audited: the customer asked)."""

    event: str
    subject: str
    actor: str
    changed: bool
    at_s: float


@dataclass(slots=True)
class _Entry:
    at_s: float
    actor: str


@dataclass(slots=True)
class _Document:
    objections: dict[str, _Entry] = field(default_factory=dict)
    restrictions: dict[str, _Entry] = field(default_factory=dict)
    consents: dict[str, _Entry] = field(default_factory=dict)


class PrivacyState:
    """Objections, restrictions and consents of this household, backed by ``store``."""

    def __init__(
        self, store: KeyStore, document: _Document | None = None, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._store = store
        self._doc = document or _Document()
        self._clock = clock
        self.version = 0
        self._refresh()

    @classmethod
    async def load(cls, store: KeyStore, *, clock: Callable[[], float] = time.time) -> PrivacyState:
        """Read the state from ``store`` (empty when none was ever saved)."""
        raw = await store.get_state(STATE_KEY)
        document = _Document()
        if raw is not None:
            try:
                data = json.loads(raw)
                for section in ("objections", "restrictions", "consents"):
                    entries = getattr(document, section)
                    for name, entry in data.get(section, {}).items():
                        entries[str(name)] = _Entry(at_s=float(entry["at_s"]), actor=str(entry["actor"]))
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise PrivacyStateError(f"stored privacy state unreadable: {exc}") from None
        return cls(store, document, clock=clock)

    # ---- fast views -------------------------------------------------------------------------

    def _refresh(self) -> None:
        self._objected = frozenset(self._doc.objections)
        self._restricted = frozenset(self._doc.restrictions)
        self._consents = frozenset(self._doc.consents)
        self.version += 1

    def objected_streams(self) -> frozenset[str]:
        return self._objected

    def restricted_streams(self) -> frozenset[str]:
        """Streams stored but not published (pass as ``exclude_streams`` to ``Buffer.take``)."""
        return self._restricted

    def consents_given(self) -> frozenset[str]:
        return self._consents

    def describe(self) -> dict[str, Any]:
        """JSON-able summary (``heatgate status``, the report): sorted names and, per name, when
        and by whom."""

        def detail(entries: dict[str, _Entry]) -> dict[str, dict[str, Any]]:
            return {name: {"at_s": e.at_s, "actor": e.actor} for name, e in sorted(entries.items())}

        return {
            "objections": sorted(self._objected),
            "restrictions": sorted(self._restricted),
            "consents": sorted(self._consents),
            "detail": {
                "objections": detail(self._doc.objections),
                "restrictions": detail(self._doc.restrictions),
                "consents": detail(self._doc.consents),
            },
        }

    # ---- changes ----------------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the stored state (another process, e.g. the CLI, may have changed it)."""
        fresh = await PrivacyState.load(self._store, clock=self._clock)
        self._doc = fresh._doc
        self._refresh()

    async def object(self, stream: str, actor: str) -> Change:
        return await self._set("objections", "privacy.object", stream, actor, True)

    async def withdraw_objection(self, stream: str, actor: str) -> Change:
        return await self._set("objections", "privacy.object.withdraw", stream, actor, False)

    async def restrict(self, stream: str, actor: str) -> Change:
        return await self._set("restrictions", "privacy.restrict", stream, actor, True)

    async def lift(self, stream: str, actor: str) -> Change:
        return await self._set("restrictions", "privacy.restrict.lift", stream, actor, False)

    async def consent(self, name: str, actor: str = "local-cli") -> Change:
        return await self._set("consents", "privacy.consent", name, actor, True)

    async def withdraw_consent(self, name: str, actor: str = "local-cli") -> Change:
        return await self._set("consents", "privacy.consent.withdraw", name, actor, False)

    async def save(self) -> None:
        await self._store.set_state(STATE_KEY, self._encode())

    async def _set(self, section: str, event: str, name: str, actor: str, on: bool) -> Change:
        entries: dict[str, _Entry] = getattr(self._doc, section)
        now_s = self._clock()
        changed = (name in entries) != on
        if changed:
            if on:
                entries[name] = _Entry(at_s=now_s, actor=actor)
            else:
                del entries[name]
            await self.save()
            self._refresh()
        return Change(event=event, subject=name, actor=actor, changed=changed, at_s=now_s)

    def _encode(self) -> bytes:
        data = {
            section: {name: {"at_s": e.at_s, "actor": e.actor} for name, e in getattr(self._doc, section).items()}
            for section in ("objections", "restrictions", "consents")
        }
        return json.dumps({"version": 1, **data}, sort_keys=True).encode()
