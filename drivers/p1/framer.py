"""Cut DSMR telegrams (``/`` … ``!XXXX\\r\\n``) out of a byte stream. Pure, bounded.

:func:`decode` looks at the start of a buffer and says how many bytes to drop and whether
they were a telegram:

- ``(0, None)``: no complete telegram yet, read more;
- ``(n, None)`` with ``n > 0``: ``n`` bytes of garbage (noise, a cut-off telegram) to drop;
- ``(n, frame)``: the first ``n`` bytes are one telegram, ``frame`` (bytes, CRLF included).

A telegram ends at ``!`` followed by four hex digits (DSMR 4/5, CRC-16) or by nothing
(DSMR 2.2/3), then CR LF (a bare LF is tolerated). A new ``/`` before the ``!`` means bytes
were lost: the partial telegram is dropped and framing resumes at the new ``/``. A buffer
that grows past :data:`MAX_TELEGRAM_BYTES` without a telegram end is dropped the same way,
so the caller's buffer stays bounded.
"""

from __future__ import annotations

__all__ = ["MAX_TELEGRAM_BYTES", "decode"]

MAX_TELEGRAM_BYTES = 16 * 1024
"""Largest telegram accepted; real ones are 0.5 to 3 kB (Belgian ones with profiles larger)."""

_START = 0x2F  # "/"
_END = 0x21  # "!"
_HEX = frozenset(b"0123456789ABCDEFabcdef")


def decode(buffer: bytes | bytearray | memoryview) -> tuple[int, bytes | None]:
    """One framing step over ``buffer``; see the module docstring for the result."""
    data = bytes(buffer[: MAX_TELEGRAM_BYTES + 8])
    size = len(data)
    if size == 0:
        return 0, None
    start = data.find(b"/")
    if start < 0:
        return size, None
    if start > 0:
        return start, None
    end = data.find(b"!", 1, MAX_TELEGRAM_BYTES)
    restart = data.find(b"/", 1, end if end >= 0 else size)
    if restart > 0:
        return restart, None
    if end < 0:
        if size >= MAX_TELEGRAM_BYTES:
            return size, None
        return 0, None
    # After "!": up to 4 hex digits, then "\r\n" or "\n".
    pos = end + 1
    digits = 0
    while pos < size and digits < 4 and data[pos] in _HEX:
        pos += 1
        digits += 1
    if pos >= size:
        return 0, None
    if data[pos] == 0x0D:
        if pos + 1 >= size:
            return 0, None
        if data[pos + 1] == 0x0A:
            return _telegram(data, pos + 2, digits)
        return end + 1, None
    if data[pos] == 0x0A:
        return _telegram(data, pos + 1, digits)
    return end + 1, None


def _telegram(data: bytes, stop: int, digits: int) -> tuple[int, bytes | None]:
    if digits not in (0, 4):
        return stop, None
    return stop, data[:stop]
