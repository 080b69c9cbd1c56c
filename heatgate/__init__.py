"""heatgate: the edge gateway agent for heat pumps, energy meters, the Dutch smart meter and Z-Wave.

One import root. ``heatgate.agent`` composes ``heatgate.drivers`` (sources) and ``heatgate.buffer``
(the encrypted store); those two use only the shared modules at this root (``backoff``, ``logs``,
``typedload``, ``settings``, ``errors``); ``heatgate.config`` holds the shipped data files.
"""

from __future__ import annotations

from importlib import metadata

try:
    __version__ = metadata.version("heatgate")
except metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__"]
