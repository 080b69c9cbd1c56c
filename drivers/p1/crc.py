"""CRC-16/ARC (poly 0xA001 reflected, init 0, no final xor): the DSMR 4/5 telegram checksum,
computed over every byte from ``/`` up to and including ``!``."""

from __future__ import annotations

__all__ = ["crc16_arc"]


def _table() -> tuple[int, ...]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
        table.append(crc)
    return tuple(table)


_TABLE = _table()


def crc16_arc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc = (crc >> 8) ^ _TABLE[(crc ^ byte) & 0xFF]
    return crc
