"""A pseudo-terminal that plays a serial device, for the simulators (P1 and Z-Wave).

The simulator holds the master side; the driver opens the slave side by its path or by a
stable symlink (``/tmp/heatgate-sim/p1``). :meth:`PtyDevice.unplug` closes the master and
removes the link, as pulling a USB adapter would; :meth:`PtyDevice.plug` opens a new one.
"""

from __future__ import annotations

import os
import tty
from pathlib import Path

__all__ = ["PtyDevice"]


class PtyDevice:
    """The master side of a pseudo-terminal, non-blocking, with an optional symlink."""

    def __init__(self, link: str | os.PathLike[str] | None = None) -> None:
        self.link = Path(link) if link is not None else None
        self.master_fd = -1
        self._slave_fd = -1
        self.slave_path = ""

    @property
    def plugged(self) -> bool:
        return self.master_fd >= 0

    def plug(self) -> str:
        """Open a new pseudo-terminal; return the slave's path (the link points at it)."""
        if self.plugged:
            return self.slave_path
        master, slave = os.openpty()
        # Raw, so that the line discipline neither echoes nor rewrites CR/LF before the driver
        # has opened the port; the slave stays open here so that writes are buffered until then.
        tty.setraw(slave)
        os.set_blocking(master, False)
        self.master_fd, self._slave_fd = master, slave
        self.slave_path = os.ttyname(slave)
        if self.link is not None:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.slave_path)
            tmp.replace(self.link)
        return self.slave_path

    def unplug(self) -> None:
        """Close the master (the driver sees a hang-up) and remove the link."""
        if self.link is not None and self.link.is_symlink() and os.readlink(self.link) == self.slave_path:
            self.link.unlink(missing_ok=True)
        for fd in (self.master_fd, self._slave_fd):
            if fd >= 0:
                os.close(fd)
        self.master_fd = self._slave_fd = -1

    def write_nowait(self, data: bytes) -> int:
        """Write what fits without blocking; a meter does not wait for its reader. Returns bytes written."""
        if not self.plugged:
            return 0
        try:
            return os.write(self.master_fd, data)
        except BlockingIOError:
            return 0
