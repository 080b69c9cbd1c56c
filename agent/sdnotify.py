"""systemd's notify protocol (``Type=notify``) and a watchdog for a stalled event loop.

The protocol is one datagram per message to ``$NOTIFY_SOCKET`` (a path, or an abstract
socket when it starts with ``@``): ``READY=1``, ``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``,
and ``RELOADING=1`` … ``READY=1`` around a reload (SIGHUP). Outside systemd every call is a no-op.

:class:`LoopWatchdog` pings systemd from the event loop (so a stalled loop stops the pings),
and a separate thread notices a stall itself: past the interval it dumps every thread's
traceback (faulthandler) to stderr for the journal and exits, so that systemd restarts the
daemon with the evidence logged.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import socket
import sys
import threading
import time
from collections.abc import Callable

from heatgate.logs import get_logger

__all__ = ["LoopWatchdog", "Notifier", "watchdog_interval_s"]

log = get_logger("heatgate.sdnotify")

EXIT_STALLED = 70  # EX_SOFTWARE: systemd's Restart=on-failure restarts it


class Notifier:
    """Sends sd_notify datagrams; silent when not started by systemd."""

    def __init__(self, socket_path: str | None = None) -> None:
        path = socket_path if socket_path is not None else os.environ.get("NOTIFY_SOCKET")
        self._address: str | None = None
        self._sock: socket.socket | None = None
        if path:
            self._address = "\0" + path[1:] if path.startswith("@") else path
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def notify(self, **fields: str | int) -> None:
        if self._sock is None or self._address is None:
            return
        message = "\n".join(f"{key.upper()}={value}" for key, value in fields.items())
        try:
            self._sock.sendto(message.encode(), self._address)
        except OSError as exc:  # systemd gone (shutdown): nothing to tell any more
            log.debug("sdnotify.notify_failed", error=str(exc))

    def ready(self, status: str) -> None:
        self.notify(ready=1, status=status)

    def reloading(self) -> None:
        """A reload starts; :meth:`ready` when it is done (applied or refused). MONOTONIC_USEC is
        what systemd >= 253 asks of ``Type=notify-reload``; older ones ignore it."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self.notify(reloading=1, status="reloading", monotonic_usec=usec)

    def status(self, status: str) -> None:
        self.notify(status=status)

    def stopping(self) -> None:
        self.notify(stopping=1, status="stopping")

    def watchdog(self) -> None:
        self.notify(watchdog=1)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


def watchdog_interval_s() -> float | None:
    """systemd's WatchdogSec for this process, or None if no watchdog is armed."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 1_000_000
    except ValueError:
        return None


class LoopWatchdog:
    """Pings systemd from the loop; a thread dumps tracebacks and exits if the loop stalls.

    ``stall_s`` is how long the loop may go without a tick before the process gives up.
    ``on_stall`` replaces the exit (tests).
    """

    def __init__(
        self,
        notifier: Notifier,
        *,
        stall_s: float,
        on_stall: Callable[[], None] | None = None,
    ) -> None:
        self._notifier = notifier
        self.stall_s = stall_s
        self._last_tick = time.monotonic()
        self._stop = threading.Event()
        self._on_stall = on_stall or self._dump_and_exit
        self._thread = threading.Thread(target=self._guard, name="heatgate-watchdog", daemon=True)

    async def run(self) -> None:
        """Tick and ping at a third of the stall interval until cancelled."""
        self._last_tick = time.monotonic()
        self._thread.start()
        try:
            while True:
                self._last_tick = time.monotonic()
                self._notifier.watchdog()
                await asyncio.sleep(self.stall_s / 3)
        finally:
            self._stop.set()
            self._thread.join(timeout=self.stall_s)

    def _guard(self) -> None:
        while not self._stop.wait(self.stall_s / 3):
            stalled_s = time.monotonic() - self._last_tick
            if stalled_s > self.stall_s:
                self._on_stall()
                return

    def _dump_and_exit(self) -> None:
        sys.stderr.write(f"heatgate: event loop stalled for more than {self.stall_s:.1f} s; tracebacks follow\n")
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        os._exit(EXIT_STALLED)
