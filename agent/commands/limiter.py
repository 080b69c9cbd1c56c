"""How many refusals the security stream hears about: per-minute budgets and exact summaries.

Anyone who can publish to the broker can send envelopes, and anyone who captured one signed
envelope can send it again. Neither may fill the security stream (and evict what matters from
the buffer) or become a flood of responses. Refusals fall into three classes:

- ``unverified``: no pinned command key signed the envelope (``oversize``, ``malformed``,
  ``unsigned``, ``unknown_key``, ``bad_signature``);
- ``verified``: signed by a pinned command key but not a valid new command for this gateway
  (another gateway's, expired or not yet valid, replayed, or an exact copy of one refused before);
- refusals a valid new command gets (authentic, addressed here, within its validity, seen for the
  first time): never limited. Only the holder of the command key can send those.

Each limited class has a budget of refusals per minute that are audited and answered one by one,
counted over a *sliding* 60 s: in any interval of 60 s, at most ``per_min`` of them. Past it a
refusal is neither audited nor answered but counted by reason, and a summary record says how many
were suppressed and why: at most one summary per class in any 60 s, the first as soon as a
refusal is suppressed, the next once 60 s have passed since the previous summary (written by the
next refusal, or by the processor's timer when no refusal comes), and a last one at close. Every
suppressed refusal is counted in exactly one summary.

Everything here is synchronous and takes the time as an argument: the caller decides before it
awaits anything, so concurrent envelopes cannot both take the last slot or both write the same
summary.
"""

from __future__ import annotations

from collections import Counter, OrderedDict, deque
from dataclasses import dataclass, field
from typing import Final, Literal

__all__ = [
    "DEFAULT_SEEN_MAX",
    "DEFAULT_UNVERIFIED_PER_MIN",
    "DEFAULT_VERIFIED_PER_MIN",
    "WINDOW_S",
    "RefusalClass",
    "RefusalLimiter",
    "SeenRefusals",
    "Summary",
]

WINDOW_S: Final = 60.0
DEFAULT_UNVERIFIED_PER_MIN: Final = 60
DEFAULT_VERIFIED_PER_MIN: Final = 120
DEFAULT_SEEN_MAX: Final = 4096

RefusalClass = Literal["unverified", "verified"]
CLASSES: Final[tuple[RefusalClass, ...]] = ("unverified", "verified")


@dataclass(frozen=True, slots=True)
class Summary:
    """Refusals of one class that were neither audited nor answered, by reason, between the
    first (``since_s``) and the last (``until_s``) of them (monotonic seconds)."""

    refusal_class: RefusalClass
    by_reason: dict[str, int]
    since_s: float
    until_s: float

    @property
    def suppressed(self) -> int:
        return sum(self.by_reason.values())


@dataclass(slots=True)
class _Class:
    per_min: int
    admitted_s: deque[float] = field(default_factory=deque)
    suppressed: Counter[str] = field(default_factory=Counter)
    first_suppressed_s: float = 0.0
    last_suppressed_s: float = 0.0
    last_summary_s: float = -float("inf")


class RefusalLimiter:
    """Per-class budgets (refusals audited one by one in any 60 s) and the suppressed counts."""

    def __init__(
        self, *, unverified_per_min: int = DEFAULT_UNVERIFIED_PER_MIN, verified_per_min: int = DEFAULT_VERIFIED_PER_MIN
    ) -> None:
        if unverified_per_min < 0 or verified_per_min < 0:
            raise ValueError("refusal budgets must be >= 0")
        self._classes: dict[RefusalClass, _Class] = {
            "unverified": _Class(unverified_per_min),
            "verified": _Class(verified_per_min),
        }

    @property
    def records_per_window_max(self) -> int:
        """The most audit records refusals of the limited classes can give in any 60 s: each
        class's budget plus its one summary."""
        return sum(c.per_min + 1 for c in self._classes.values())

    def admit(self, refusal_class: RefusalClass, reason: str, now_s: float) -> bool:
        """Whether this refusal is audited and answered (True) or counted in the next summary."""
        state = self._classes[refusal_class]
        while state.admitted_s and now_s - state.admitted_s[0] >= WINDOW_S:
            state.admitted_s.popleft()
        if len(state.admitted_s) < state.per_min:
            state.admitted_s.append(now_s)
            return True
        if not state.suppressed:
            state.first_suppressed_s = now_s
        state.suppressed[reason] += 1
        state.last_suppressed_s = now_s
        return False

    def due_summaries(self, now_s: float) -> list[Summary]:
        """Takes the counts of every class whose summary may be written now (it has suppressed
        refusals, and its previous summary is at least 60 s old). The caller writes them."""
        return [
            self._take(name, now_s)
            for name, state in self._classes.items()
            if state.suppressed and now_s >= state.last_summary_s + WINDOW_S
        ]

    def next_summary_s(self) -> float | None:
        """When the earliest pending summary may be written (None: nothing is pending)."""
        pending = [s.last_summary_s + WINDOW_S for s in self._classes.values() if s.suppressed]
        return min(pending) if pending else None

    def take_all(self, now_s: float) -> list[Summary]:
        """Takes every pending count, due or not (when the processor closes)."""
        return [self._take(name, now_s) for name, state in self._classes.items() if state.suppressed]

    def restore(self, summary: Summary) -> None:
        """Puts back the counts of a summary that could not be written, so that none is lost."""
        state = self._classes[summary.refusal_class]
        if not state.suppressed:
            state.first_suppressed_s, state.last_suppressed_s = summary.since_s, summary.until_s
        else:
            state.first_suppressed_s = min(state.first_suppressed_s, summary.since_s)
        state.suppressed.update(summary.by_reason)

    def _take(self, name: RefusalClass, now_s: float) -> Summary:
        state = self._classes[name]
        summary = Summary(
            name, dict(sorted(state.suppressed.items())), state.first_suppressed_s, state.last_suppressed_s
        )
        state.suppressed.clear()
        state.last_summary_s = now_s
        return summary


class SeenRefusals:
    """Fingerprints of refusals that a valid new command got, each kept ``keep_s`` (at least the
    longest time an envelope can be valid, so that any copy of it is recognised). At most
    ``max_entries``; past that the oldest is forgotten (only the command key's holder can add
    entries, so reaching it takes that many refused commands signed within ``keep_s``)."""

    def __init__(self, keep_s: float, *, max_entries: int = DEFAULT_SEEN_MAX) -> None:
        self.keep_s = keep_s
        self.max_entries = max_entries
        self._until_s: OrderedDict[str, float] = OrderedDict()

    def first_sight(self, fingerprint: str, now_s: float) -> bool:
        """True the first time ``fingerprint`` is offered within ``keep_s``; remembers it."""
        while self._until_s:
            oldest, until_s = next(iter(self._until_s.items()))
            if until_s > now_s:
                break
            del self._until_s[oldest]
        if fingerprint in self._until_s:
            return False
        self._until_s[fingerprint] = now_s + self.keep_s
        while len(self._until_s) > self.max_entries:
            self._until_s.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._until_s)
