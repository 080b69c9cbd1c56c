"""Pure decoding of Modbus register words into values, and encoding back (for writes).

A value of ``n`` registers is assembled from its words in *word order* (``big``: the most
significant word first, as the Modbus spec and most meters do; ``little``: least significant
first, as many PLCs do) and each word's two bytes in *byte order* (``big`` is the wire order;
``little`` swaps them). No I/O here: words in, value out, :class:`DecodeError` on bad input.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Literal

from heatgate.drivers.modbus.errors import DecodeError

__all__ = [
    "BYTE_TYPES",
    "REGISTER_COUNT",
    "Order",
    "RegisterType",
    "decode_words",
    "encode_value",
    "raw_is_nan",
    "register_count",
    "words_to_bytes",
]

RegisterType = Literal["u16", "s16", "u8hi", "u8lo", "u32", "s32", "u64", "s64", "f32", "f64", "string", "bits"]
BYTE_TYPES = ("u8hi", "u8lo")
"""8-bit values packed in one register: its first (``hi``) or second (``lo``) byte on the wire."""
Order = Literal["big", "little"]

REGISTER_COUNT: dict[str, int] = {
    "u16": 1,
    "s16": 1,
    "u8hi": 1,
    "u8lo": 1,
    "bits": 1,
    "u32": 2,
    "s32": 2,
    "f32": 2,
    "u64": 4,
    "s64": 4,
    "f64": 4,
}
_STRUCT: dict[str, str] = {
    "u16": "H",
    "s16": "h",
    "bits": "H",
    "u32": "I",
    "s32": "i",
    "f32": "f",
    "u64": "Q",
    "s64": "q",
    "f64": "d",
}


def register_count(type_: str, length: int | None = None) -> int:
    """Registers a value of ``type_`` occupies; strings give their ``length`` in registers."""
    if type_ == "string":
        if not length or length < 1:
            raise DecodeError("a string needs a length in registers")
        return length
    try:
        return REGISTER_COUNT[type_]
    except KeyError:
        raise DecodeError(f"unknown register type {type_!r}") from None


def words_to_bytes(words: Sequence[int], word_order: Order = "big", byte_order: Order = "big") -> bytes:
    """The value's bytes, most significant first, from its register words."""
    ordered = list(words) if word_order == "big" else list(reversed(words))
    out = bytearray()
    for word in ordered:
        if not 0 <= word <= 0xFFFF:
            raise DecodeError(f"register word out of range: {word}")
        hi, lo = word >> 8, word & 0xFF
        out += bytes((hi, lo)) if byte_order == "big" else bytes((lo, hi))
    return bytes(out)


def _bytes_to_words(data: bytes, word_order: Order, byte_order: Order) -> list[int]:
    words = []
    for i in range(0, len(data), 2):
        hi, lo = data[i], data[i + 1]
        words.append((hi << 8) | lo if byte_order == "big" else (lo << 8) | hi)
    return words if word_order == "big" else list(reversed(words))


def decode_words(
    words: Sequence[int], type_: str, *, word_order: Order = "big", byte_order: Order = "big"
) -> int | float | str:
    """Decode ``words`` (exactly the point's register count) as ``type_``.

    Strings are read in register order (word order does not apply to text), each register's
    bytes in ``byte_order``; trailing NULs and spaces are dropped; non-ASCII text is a
    :class:`DecodeError`.
    """
    if type_ == "string":
        if not words:
            raise DecodeError("a string needs at least one register")
        data = words_to_bytes(words, "big", byte_order)
        try:
            return data.rstrip(b"\x00 ").decode("ascii")
        except UnicodeDecodeError as exc:
            raise DecodeError(f"string is not ASCII at byte {exc.start}") from None
    expected = register_count(type_)
    if len(words) != expected:
        raise DecodeError(f"{type_} needs {expected} register(s), got {len(words)}")
    data = words_to_bytes(words, word_order, byte_order)
    if type_ in BYTE_TYPES:
        return data[0] if type_ == "u8hi" else data[1]
    value: int | float = struct.unpack(">" + _STRUCT[type_], data)[0]
    return value


def raw_is_nan(value: int | float | str) -> bool:
    """True for a float NaN or infinity, which meters use as "no value"."""
    return isinstance(value, float) and not math.isfinite(value)


def encode_value(
    value: int | float | str,
    type_: str,
    *,
    word_order: Order = "big",
    byte_order: Order = "big",
    length: int | None = None,
) -> list[int]:
    """Register words for ``value`` (the inverse of :func:`decode_words`)."""
    if type_ == "string":
        count = register_count(type_, length)
        raw = str(value).encode("ascii")
        if len(raw) > 2 * count:
            raise DecodeError(f"string of {len(raw)} bytes does not fit {count} registers")
        return _bytes_to_words(raw.ljust(2 * count, b"\x00"), "big", byte_order)
    if type_ in BYTE_TYPES:
        # Only the point's own byte is known; the other half of the register is written as 0.
        if not isinstance(value, int | float) or not 0 <= int(value) <= 0xFF:
            raise DecodeError(f"{value!r} does not fit {type_}")
        byte = int(value)
        pair = bytes((byte, 0)) if type_ == "u8hi" else bytes((0, byte))
        return _bytes_to_words(pair, word_order, byte_order)
    code = _STRUCT.get(type_)
    if code is None:
        raise DecodeError(f"unknown register type {type_!r}")
    try:
        data = struct.pack(">" + code, value if type_.startswith("f") else int(value))
    except (struct.error, OverflowError) as exc:
        raise DecodeError(f"{value!r} does not fit {type_}: {exc}") from None
    return _bytes_to_words(data, word_order, byte_order)
