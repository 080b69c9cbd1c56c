"""Backoff for everything that retries: capped exponential with full jitter.

Full jitter (a uniform draw between 0 and the capped exponential) spreads a fleet's retries
over the whole interval, so that ten thousand gateways that lost the same broker do not come
back in the same second.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff", "full_jitter_delay_s"]


def full_jitter_delay_s(attempt: int, *, min_s: float, max_s: float, rng: random.Random | None = None) -> float:
    """Delay before retry number ``attempt`` (0 = first retry): U(0, min(max_s, min_s * 2**attempt)),
    but never below ``min_s / 2`` so that a tight loop is impossible."""
    ceiling = min(max_s, min_s * (2 ** min(attempt, 32)))
    draw = (rng or random).uniform(0.0, ceiling)
    return max(min_s / 2, draw)


@dataclass
class Backoff:
    """Stateful helper: ``next_delay_s()`` after each failure, ``reset()`` after a success."""

    min_s: float = 1.0
    max_s: float = 300.0
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay_s(self) -> float:
        delay = full_jitter_delay_s(self.attempt, min_s=self.min_s, max_s=self.max_s, rng=self.rng)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
