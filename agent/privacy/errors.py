"""Errors of the privacy layer. One root, :class:`PrivacyError`; each carries the fields a caller needs.

The modules that raise them re-export them (``heatgate.agent.privacy.state.PrivacyStateError``, …).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from heatgate.errors import HeatgateError

if TYPE_CHECKING:
    from heatgate.buffer.api import NewRecord

__all__ = ["PrivacyError", "PrivacyStateError", "PseudonymError", "RightsRefused"]


class PrivacyError(HeatgateError):
    """Root of :mod:`heatgate.agent.privacy` errors; ``reason`` says what went wrong."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PseudonymError(PrivacyError):
    """The stored key material is unusable (carries the reason)."""


class PrivacyStateError(PrivacyError):
    """The stored state is unreadable (carries the reason)."""


class RightsRefused(PrivacyError):
    """The register does not allow the request; carries the reason and the committed audit record."""

    def __init__(self, reason: str, record: NewRecord) -> None:
        super().__init__(reason)
        self.record = record
