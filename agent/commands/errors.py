"""The root of the command layer's exceptions."""

from __future__ import annotations

__all__ = ["CommandError"]


class CommandError(Exception):
    """Root of :mod:`agent.commands` errors."""
