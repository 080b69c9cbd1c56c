"""Backoff: capped, exponential, and spread out (full jitter)."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from heatgate.backoff import Backoff, full_jitter_delay_s


@given(attempt=st.integers(0, 200), min_s=st.floats(0.01, 10), max_s=st.floats(10, 3600), seed=st.integers())
def test_delay_within_bounds(attempt: int, min_s: float, max_s: float, seed: int) -> None:
    delay = full_jitter_delay_s(attempt, min_s=min_s, max_s=max_s, rng=random.Random(seed))
    assert min_s / 2 <= delay <= max(min_s / 2, min(max_s, min_s * 2**attempt))


def test_fleet_spreads_over_the_interval() -> None:
    # 10,000 gateways at their 8th retry with a 1..300 s backoff: no second gets a spike.
    rng = random.Random(7)
    delays = [full_jitter_delay_s(8, min_s=1, max_s=300, rng=rng) for _ in range(10_000)]
    per_second = [0] * 257
    for delay in delays:
        per_second[int(delay)] += 1
    assert max(per_second) < 3 * (10_000 / 256)
    assert 100 < sum(delays) / len(delays) < 156  # mean of U(0, 256) is 128


def test_backoff_grows_and_resets() -> None:
    backoff = Backoff(min_s=1, max_s=60, rng=random.Random(1))
    ceilings = []
    for _ in range(10):
        backoff.next_delay_s()
        ceilings.append(min(60, 2 ** (backoff.attempt - 1)))
    assert ceilings[-1] == 60
    backoff.reset()
    assert backoff.attempt == 0
