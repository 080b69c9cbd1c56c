"""Aggregation windows: where a window starts and ends.

A window shorter than a day starts on a multiple of its length (UTC epoch seconds; the Dutch
offsets are whole hours, so quarter-hours and hours are the local ones too). A window of a day
or longer is made of calendar days in the gateway's time zone (``gateway.timezone``, default
Europe/Amsterdam), as on the customer's energy bill: the day the clocks go forward has 23 hours,
the day they go back 25. Multi-day windows count whole local days from 1970-01-01.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

__all__ = ["DAY_S", "DEFAULT_TIMEZONE", "WindowClock"]

DAY_S = 86400
DEFAULT_TIMEZONE = "Europe/Amsterdam"
_EPOCH_ORDINAL = dt.date(1970, 1, 1).toordinal()


class WindowClock:
    """Window bounds in one time zone; caches the last window of each length (the hot path asks
    for the same one again and again)."""

    def __init__(self, timezone: str = DEFAULT_TIMEZONE) -> None:
        self.timezone = timezone
        self._tz = ZoneInfo(timezone)
        self._last: dict[int, tuple[float, float]] = {}

    def bounds(self, ts: float, window_s: int) -> tuple[float, float]:
        """``(start, end)`` of the window of length ``window_s`` that contains ``ts`` (UTC epoch
        seconds); ``end - start`` is the window's real length (not ``window_s`` across DST)."""
        if window_s < DAY_S:
            start = ts - ts % window_s
            return start, start + window_s
        cached = self._last.get(window_s)
        if cached is not None and cached[0] <= ts < cached[1]:
            return cached
        days = window_s // DAY_S
        ordinal = dt.datetime.fromtimestamp(ts, self._tz).date().toordinal()
        first = ordinal - (ordinal - _EPOCH_ORDINAL) % days
        start = self._midnight(first)
        end = self._midnight(first + days)
        self._last[window_s] = (start, end)
        return start, end

    def _midnight(self, ordinal: int) -> float:
        day = dt.date.fromordinal(ordinal)
        return dt.datetime(day.year, day.month, day.day, tzinfo=self._tz).timestamp()
