"""Key epochs: how long one data key encrypts a stream's records.

Each stream's records are encrypted with a data key per epoch, a fixed window of creation
time. An epoch expires once its *start* is older than the stream's retention: its rows are
deleted and its data key destroyed. So no record is kept longer than its retention, and a record
is deleted at most one epoch early; retention is exact to within one epoch.

Unless configured, an epoch lasts 1/30 of the stream's retention, clamped to [1 h, 30 d]:
14 days of retention -> 11.2 h epochs (records live between 13.5 and 14 days), 24 months ->
~24 d epochs. A stream without a retention is never swept (records leave when published or
evicted) and uses 1-day epochs.
"""

from __future__ import annotations

import math

__all__ = ["EPOCH_FRACTION", "MAX_EPOCH_S", "MIN_EPOCH_S", "NO_RETENTION_EPOCH_S", "default_epoch_s", "epoch_window"]

EPOCH_FRACTION = 1 / 30
MIN_EPOCH_S = 3600.0
MAX_EPOCH_S = 30 * 86400.0
NO_RETENTION_EPOCH_S = 86400.0


def default_epoch_s(retention_s: float | None) -> float:
    """Epoch length for a stream with this retention (see the module docstring)."""
    if retention_s is None or math.isinf(retention_s):
        return NO_RETENTION_EPOCH_S
    return min(MAX_EPOCH_S, max(MIN_EPOCH_S, retention_s * EPOCH_FRACTION))


def epoch_window(created_s: float, epoch_s: float) -> tuple[float, float]:
    """The ``[start_s, end_s)`` window of the epoch that contains ``created_s``."""
    start_s = math.floor(created_s / epoch_s) * epoch_s
    return start_s, start_s + epoch_s
