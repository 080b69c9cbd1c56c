"""heatgate: the edge gateway agent for heat pumps, energy meters, the Dutch smart meter and Z-Wave.

One import root. ``heatgate.agent`` composes ``heatgate.drivers`` (sources) and ``heatgate.buffer``
(the encrypted store); those two use only the shared modules at this root (``backoff``, ``logs``,
``typedload``, ``settings``, ``errors``); ``heatgate.config`` holds the shipped data files.
"""

from __future__ import annotations

__version__ = "0.1.0"
"""The release, as in pyproject.toml (a test keeps them equal). A literal, not
``importlib.metadata.version()``: that import costs the daemon 1.7 MiB of resident memory."""

__all__ = ["__version__"]
