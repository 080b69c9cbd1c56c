"""A dict-backed key-value state (the ``get_state``/``set_state`` half of the Buffer protocol),
for pipeline tests that need no buffer. Rights and CLI tests use the real encrypted buffer."""

from __future__ import annotations


class MemoryState:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}
        self.writes = 0

    async def get_state(self, key: str) -> bytes | None:
        return self.values.get(key)

    async def set_state(self, key: str, value: bytes | None) -> None:
        self.writes += 1
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
