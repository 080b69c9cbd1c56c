"""The root of every exception heatgate raises on purpose.

Each area has its own errors module whose root derives from :class:`HeatgateError`
(``heatgate.buffer.errors``, ``heatgate.drivers.reading.DriverError``, ``heatgate.agent.publish.errors``,
``heatgate.agent.commands.errors``, ``heatgate.typedload.ConfigError``, ...), so that a caller at a
task's boundary can catch what heatgate means to raise, and nothing else, in one clause.
"""

from __future__ import annotations

__all__ = ["HeatgateError"]


class HeatgateError(Exception):
    """Something heatgate detected and reports; subclasses carry the fields a caller needs."""
