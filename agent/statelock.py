"""One agent per state directory: an exclusive ``flock`` on ``<state_dir>/agent.lock``.

Two agents on one state directory would share the buffer (``database is locked``) and the
broker client id (each knocking the other off). ``heatgate run`` takes this lock before it opens
the buffer, the status socket or a broker connection; a second agent gets :class:`StateLocked`
and touches nothing. The kernel releases the lock on any death of the holder (``kill -9``
included), so a stale file never blocks a restart. The file holds the holder's PID, for the
message only: the lock, not the file, is what counts.

Local commands that only read or write the buffer (``heatgate privacy …``) do not take it: they
share the database with a running agent through SQLite's own locking.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from heatgate.errors import HeatgateError

__all__ = ["LOCK_NAME", "StateLock", "StateLocked"]

LOCK_NAME = "agent.lock"


class StateLocked(HeatgateError):
    """Another agent holds the state directory's lock (``pid`` None when it could not be read)."""

    def __init__(self, state_dir: Path, pid: int | None) -> None:
        holder = f"another agent (pid {pid})" if pid is not None else "another agent"
        super().__init__(f"{holder} is running on {state_dir}; stop it first")
        self.state_dir = state_dir
        self.pid = pid


class StateLock:
    """The held lock; :meth:`release` (or process exit) gives it up."""

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, state_dir: Path) -> StateLock:
        """Take the lock without waiting; raise :class:`StateLocked` if another process has it
        (OSError if the directory cannot be made or the file opened)."""
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = state_dir / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = _read_pid(fd)
            os.close(fd)
            raise StateLocked(state_dir, pid) from None
        except BaseException:
            os.close(fd)
            raise
        os.fchmod(fd, 0o600)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self._fd is None:
            return
        # Empty the file first: a reader between the two steps sees no PID rather than ours.
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)
        self._fd = None


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
