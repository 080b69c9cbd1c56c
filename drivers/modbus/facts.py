"""What the driver learned about a device's register map that its profile does not say.

A merged block read that the device refuses (exception 2 or 3) or never answers is split by
the runner to find the registers behind it; those ranges are *facts* about the device, kept
in :class:`DeviceFacts`. Ranges found by an exception response are persisted under the state
directory (``<state_dir>/modbus/<source>.<device>.json``), so that a restart does not pay the
split again; ranges found only by silence stay in memory for the run (a timeout can also be
a flaky line). A learned read limit (a block refused as a whole although every part of it
reads) is persisted too.

The file is keyed by unit id and profile name: a device moved to another unit id or given
another profile starts from nothing. Facts older than :data:`RELEARN_AFTER_S` are dropped at
load, so that a firmware update that makes a register readable is noticed eventually.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import cast

from heatgate.drivers.modbus.profile import Table, Unreadable

__all__ = ["RELEARN_AFTER_S", "DeviceFacts", "facts_path"]

RELEARN_AFTER_S = 30 * 86400.0
_VERSION = 1


def facts_path(state_dir: Path, source: str, device: str) -> Path:
    return state_dir / "modbus" / f"{source}.{device}.json"


@dataclass
class DeviceFacts:
    """Learned unreadable ranges and read limit of one device."""

    unit_id: int
    profile: str
    unreadable: list[Unreadable] = field(default_factory=list)
    """Refused with an exception response: persisted."""
    silent: list[Unreadable] = field(default_factory=list)
    """Never answered although the device answers other reads: this run only."""
    max_registers: int | None = None
    learned_ts: float | None = None

    def all_unreadable(self) -> list[Unreadable]:
        return [*self.unreadable, *self.silent]

    def add(self, table: str, start: int, end: int, *, silent: bool) -> None:
        """Record ``start..end`` (inclusive) of ``table`` as unreadable."""
        entry = Unreadable(table=cast(Table, table), start=start, end=end)
        (self.silent if silent else self.unreadable).append(entry)
        self.learned_ts = time.time()

    def limit(self, max_registers: int) -> None:
        self.max_registers = max_registers if self.max_registers is None else min(self.max_registers, max_registers)
        self.learned_ts = time.time()

    def describe(self) -> list[str]:
        """Each unreadable range as ``input 1046-1047`` (``(no answer)`` for silent ones)."""
        out = [f"{u.table} {u.start}" + (f"-{u.end}" if u.end != u.start else "") for u in self.unreadable]
        out += [
            f"{u.table} {u.start}" + (f"-{u.end}" if u.end != u.start else "") + " (no answer)" for u in self.silent
        ]
        return out

    # -- persistence -----------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None, *, unit_id: int, profile: str, now_s: float | None = None) -> DeviceFacts:
        """The persisted facts at ``path`` if they belong to this unit and profile and are not
        stale; empty facts otherwise (a missing or unreadable file is not an error)."""
        fresh = cls(unit_id=unit_id, profile=profile)
        if path is None:
            return fresh
        try:
            data = json.loads(path.read_text())
            if data.get("version") != _VERSION or data.get("unit_id") != unit_id or data.get("profile") != profile:
                return fresh
            learned_ts = float(data["learned_ts"])
            if (now_s if now_s is not None else time.time()) - learned_ts > RELEARN_AFTER_S:
                return fresh
            ranges = [
                Unreadable(table=r["table"], start=int(r["start"]), end=int(r["end"])) for r in data["unreadable"]
            ]
            limit = data.get("max_registers")
            return cls(
                unit_id=unit_id,
                profile=profile,
                unreadable=ranges,
                max_registers=int(limit) if limit is not None else None,
                learned_ts=learned_ts,
            )
        except (OSError, ValueError, KeyError, TypeError):
            return fresh

    def save(self, path: Path | None) -> None:
        """Write the persistent facts atomically (mode 0600); no-op without a path."""
        if path is None:
            return
        data = {
            "version": _VERSION,
            "unit_id": self.unit_id,
            "profile": self.profile,
            "learned_ts": self.learned_ts or time.time(),
            "unreadable": [{"table": u.table, "start": u.start, "end": u.end} for u in self.unreadable],
            "max_registers": self.max_registers,
        }
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=1)
        os.replace(tmp, path)
