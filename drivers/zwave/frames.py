"""Serial API frames: pure encode and decode.

A data frame is ``SOF(0x01) LEN TYPE FUNC PAYLOAD… CHECKSUM`` where LEN counts the bytes
after itself (TYPE to CHECKSUM), TYPE is 0x00 (request) or 0x01 (response) and CHECKSUM is
0xFF XOR every byte from LEN to the last payload byte. Single bytes ACK 0x06, NAK 0x15 and
CAN 0x18 acknowledge frames.

:func:`decode` returns ``(consumed, frame)``: ``(0, None)`` = read more; ``(n, None)`` with
n > 0 = n bytes of garbage skipped; ``(n, frame)`` = one frame or control byte. A complete
frame with a wrong checksum raises :class:`ZwaveChecksumError` whose ``consumed`` says how
many bytes to drop (the host answers it with NAK). Nothing else is ever raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from heatgate.drivers.reading import DriverError

__all__ = [
    "ACK",
    "CAN",
    "NAK",
    "SOF",
    "Control",
    "DataFrame",
    "FrameType",
    "ZwaveChecksumError",
    "ZwaveError",
    "ZwaveFrameError",
    "checksum",
    "decode",
    "encode",
]

SOF = 0x01
ACK = 0x06
NAK = 0x15
CAN = 0x18
MIN_LENGTH = 3  # TYPE, FUNC, CHECKSUM


class ZwaveError(DriverError):
    """Root of the Z-Wave driver's errors."""


class ZwaveFrameError(ZwaveError):
    """Bytes that are not a valid frame; ``consumed`` bytes are to be dropped."""

    def __init__(self, message: str, *, consumed: int, source: str = "") -> None:
        super().__init__(message, source=source)
        self.consumed = consumed


class ZwaveChecksumError(ZwaveFrameError):
    def __init__(self, message: str, *, consumed: int, expected: int, actual: int) -> None:
        super().__init__(message, consumed=consumed)
        self.expected = expected
        self.actual = actual


class FrameType(IntEnum):
    REQUEST = 0x00
    RESPONSE = 0x01


class Control(IntEnum):
    ACK = ACK
    NAK = NAK
    CAN = CAN


@dataclass(frozen=True, slots=True)
class DataFrame:
    type: FrameType
    function: int
    payload: bytes = b""


def checksum(body: bytes) -> int:
    """0xFF XOR every byte of ``body`` (LEN through the last payload byte)."""
    value = 0xFF
    for byte in body:
        value ^= byte
    return value


def encode(frame: DataFrame) -> bytes:
    if len(frame.payload) > 255 - MIN_LENGTH:
        raise ValueError(f"payload of {len(frame.payload)} bytes does not fit a frame")
    body = bytes([len(frame.payload) + MIN_LENGTH, frame.type, frame.function]) + frame.payload
    return bytes([SOF]) + body + bytes([checksum(body)])


def decode(buffer: bytes | bytearray | memoryview) -> tuple[int, DataFrame | Control | None]:
    """One step over the start of ``buffer``; see the module docstring."""
    size = len(buffer)
    if size == 0:
        return 0, None
    first = buffer[0]
    if first in (ACK, NAK, CAN):
        return 1, Control(first)
    if first != SOF:
        skip = 1
        while skip < size and buffer[skip] not in (SOF, ACK, NAK, CAN):
            skip += 1
        return skip, None
    if size < 2:
        return 0, None
    length = buffer[1]
    if length < MIN_LENGTH:
        return 1, None  # not a frame start after all: resync on the next byte
    total = length + 2
    if size < total:
        return 0, None
    body = bytes(buffer[1 : total - 1])
    expected = checksum(body)
    actual = buffer[total - 1]
    if actual != expected:
        raise ZwaveChecksumError(
            f"checksum 0x{actual:02x}, expected 0x{expected:02x}", consumed=total, expected=expected, actual=actual
        )
    kind = body[1]
    if kind not in (FrameType.REQUEST, FrameType.RESPONSE):
        return 1, None
    return total, DataFrame(FrameType(kind), body[2], body[3:])
