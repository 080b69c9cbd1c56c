"""The root of the command layer's exceptions."""

from __future__ import annotations

from heatgate.errors import HeatgateError

__all__ = ["CommandError"]


class CommandError(HeatgateError):
    """Root of :mod:`agent.commands` errors."""
