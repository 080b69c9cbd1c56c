"""Errors of the P1 driver: one root, :class:`P1Error`, under :class:`DriverError`."""

from __future__ import annotations

from heatgate.drivers.reading import DriverError

__all__ = ["P1ChecksumError", "P1Error", "P1FrameError", "P1ParseError"]


class P1Error(DriverError):
    """Root of the P1 driver's errors."""


class P1FrameError(P1Error):
    """Bytes that cannot be a telegram. The framer resynchronises instead of raising it;
    it exists so that callers can catch one type for everything frame-related."""

    def __init__(self, message: str, *, consumed: int, source: str = "") -> None:
        super().__init__(message, source=source)
        self.consumed = consumed


class P1ParseError(P1Error):
    """A complete telegram whose content dsmr-parser rejects."""


class P1ChecksumError(P1ParseError):
    """The telegram's CRC-16 does not match (line noise; counted, logged at info)."""

    def __init__(self, message: str, *, expected: int, actual: int, source: str = "") -> None:
        super().__init__(message, source=source)
        self.expected = expected
        self.actual = actual
