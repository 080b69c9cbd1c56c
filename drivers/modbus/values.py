"""From a block's raw words to point values: pure, no I/O.

:func:`point_value` applies a point's type, orders, invalid sentinel, scale/offset and code
labels; :func:`split_block` cuts a block read into its points; :func:`raw_for_write` is the
inverse used by writes (bounds checked in engineering units).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from heatgate.drivers.modbus.decode import decode_words, encode_value, raw_is_nan
from heatgate.drivers.modbus.errors import DecodeError
from heatgate.drivers.modbus.planner import Block
from heatgate.drivers.modbus.profile import BIT_TABLES, Point
from heatgate.drivers.reading import Quality

__all__ = ["PointValue", "point_value", "raw_for_write", "split_block"]


@dataclass(frozen=True, slots=True)
class PointValue:
    point: Point
    value: int | float | str | None
    quality: Quality
    text: str | None = None


def point_value(point: Point, words: Sequence[int] | Sequence[bool]) -> PointValue:
    """Decode one point from exactly its words (or its one bit)."""
    try:
        if point.table in BIT_TABLES:
            raw: int | float | str = int(bool(words[0]))
        else:
            raw = decode_words(
                [int(w) for w in words], point.type, word_order=point.word_order, byte_order=point.byte_order
            )
    except (DecodeError, IndexError):
        return PointValue(point, None, Quality.INVALID)
    if point.type == "f32" and isinstance(raw, float):
        raw = float(f"{raw:.7g}")  # a float32 carries 7 significant digits; drop the widening noise
    if point.is_invalid(raw) or raw_is_nan(raw):
        return PointValue(point, None, Quality.INVALID)
    if isinstance(raw, str):
        return PointValue(point, raw if point.chars is None else raw[: point.chars], Quality.OK)
    if point.bit_range is not None and isinstance(raw, int):
        first, last = point.bit_range
        raw = (raw >> first) & ((1 << (last - first + 1)) - 1)
    text = point.label(raw)
    if point.scale == 1.0 and point.offset == 0.0:
        return PointValue(point, raw, Quality.OK, text)
    value = raw * point.scale + point.offset
    # Round away binary noise (0.1 * 215 = 21.500000000000004) to the scale's precision.
    return PointValue(point, round(value, 9), Quality.OK, text)


def split_block(block: Block, data: Sequence[int] | Sequence[bool]) -> list[PointValue]:
    """Every point of ``block`` from the block's words (or bits)."""
    out = []
    for point in block.points:
        lo = point.address - block.start
        out.append(point_value(point, data[lo : lo + point.count]))
    return out


def raw_for_write(point: Point, value: float) -> list[int]:
    """Register words (or ``[bit]``) that make ``point`` read ``value``, in the point's
    ``write_word_order``; raises ValueError when the point is not writable or ``value`` is
    outside its bounds."""
    if not point.writable:
        raise ValueError(f"point {point.name!r} is not writable")
    assert point.min is not None and point.max is not None
    if not point.min <= value <= point.max:
        raise ValueError(f"{value} is outside {point.name}'s bounds {point.min}..{point.max}")
    if point.table in BIT_TABLES:
        return [1 if value else 0]
    raw = (value - point.offset) / point.scale
    try:
        if point.type.startswith("f"):
            return encode_value(raw, point.type, word_order=point.write_order, byte_order=point.byte_order)
        return encode_value(round(raw), point.type, word_order=point.write_order, byte_order=point.byte_order)
    except DecodeError as exc:
        raise ValueError(str(exc)) from None
