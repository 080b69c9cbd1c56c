"""Settings of a P1 source (the Dutch smart meter's serial port)."""

from __future__ import annotations

from typing import Literal

from heatgate.settings import AbsPath, SourceSettings

__all__ = ["P1Source"]


class P1Source(SourceSettings, tag="p1", frozen=True, kw_only=True):
    port: AbsPath
    dsmr_version: Literal["2.2", "3", "4", "5", "5B", "5L", "5S"] = "5"
    serial_settings: Literal["8N1", "7E1"] | None = None
    """Default follows the version: 7E1 at 9600 baud for 2.2/3, 8N1 at 115200 for 4 and 5."""
