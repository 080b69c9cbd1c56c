"""Errors of the Modbus driver; every one is a :class:`drivers.reading.DriverError`."""

from __future__ import annotations

from heatgate.drivers.reading import DriverError

__all__ = [
    "DecodeError",
    "ModbusCommError",
    "ModbusError",
    "ModbusExceptionResponse",
    "ModbusTimeout",
    "WriteRefused",
]


class ModbusError(DriverError):
    """Root of the Modbus driver's errors."""


class DecodeError(ModbusError):
    """Register words could not be decoded as the point's type (wrong count, bad encoding)."""


class ModbusTimeout(ModbusError):
    """A request got no answer within its timeout."""

    def __init__(self, message: str, *, source: str = "", device: str = "", unit_id: int = 0) -> None:
        super().__init__(message, source=source, device=device)
        self.unit_id = unit_id


class ModbusExceptionResponse(ModbusError):
    """The slave answered with a Modbus exception (e.g. 2 = illegal data address)."""

    def __init__(self, message: str, *, code: int, source: str = "", device: str = "") -> None:
        super().__init__(message, source=source, device=device)
        self.code = code


class ModbusCommError(ModbusError):
    """The link itself failed: not connected, port gone, garbled frame."""


class WriteRefused(ModbusError):
    """A write was refused before it reached the wire: unknown point, not writable, out of bounds."""

    def __init__(self, message: str, *, point: str, source: str = "", device: str = "") -> None:
        super().__init__(message, source=source, device=device)
        self.point = point
