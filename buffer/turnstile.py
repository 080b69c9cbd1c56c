"""Who writes next when two processes share the buffer: the agent and a local command.

SQLite lets one writer at a time and its busy handler is not fair. The agent keeps a write
transaction open for its commit interval and opens the next one right after each commit, so
under load the database is write-locked nearly all the time, and a second process polling
for the lock (``heatgate privacy erase`` while the agent runs) loses every time until its busy
timeout runs out.

The turnstile is an ``flock`` on a sidecar file (``<db>-turnstile``, empty, mode 0600):

* the agent *passes through* it before each write transaction (a shared lock taken and
  released at once: one system call pair per transaction);
* a local command *holds* it exclusively from open to close. The agent's next transaction
  waits at the turnstile (its writer thread only; puts queue up in memory) instead of
  taking the write lock again, so the command's busy timeout needs to cover at most the
  agent's one open transaction.

``flock`` locks belong to the open file description, so they never interfere with SQLite's own
POSIX locks on the database, its -wal or -shm; the kernel drops them when the process dies.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from heatgate.buffer.errors import BufferBusy

__all__ = ["Turnstile", "turnstile_path"]

_POLL_S = 0.01


def turnstile_path(db_path: Path) -> Path:
    return Path(f"{db_path}-turnstile")


class Turnstile:
    """The sidecar lock of one database; see the module docstring."""

    def __init__(self, db_path: Path) -> None:
        self.path = turnstile_path(db_path)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
        os.fchmod(fd, 0o600)
        self._fd = fd
        self._held = False

    def hold(self, wait_s: float) -> None:
        """Take the turnstile exclusively (a local command); raise :class:`BufferBusy` if
        another local command still holds it after ``wait_s``."""
        if not self._acquire(fcntl.LOCK_EX, wait_s):
            raise BufferBusy(
                self.path.with_name(self.path.name.removesuffix("-turnstile")), wait_s, "another local heatgate command"
            )
        self._held = True

    def pass_through(self, wait_s: float) -> bool:
        """Wait (up to ``wait_s``) until no local command holds the turnstile (the agent, before a
        write transaction). False if one still held it at the end: the caller goes on to SQLite's
        own busy timeout."""
        if self._held:
            return True
        if not self._acquire(fcntl.LOCK_SH, wait_s):
            return False
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        return True

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # releases a held lock
            self._fd = -1
            self._held = False

    def _acquire(self, mode: int, wait_s: float) -> bool:
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(self._fd, mode | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return False
                time.sleep(_POLL_S)
