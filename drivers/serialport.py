"""The one adapter between pyserial and the event loop, shared by the P1 and Z-Wave drivers.

pyserial opens the port and sets its line settings (baud rate, parity, raw mode); the
non-blocking file descriptor it leaves behind is then watched with ``loop.add_reader`` and
``loop.add_writer``: no thread, no polling. A port that goes away (a USB adapter unplugged:
``EIO`` or end of file on a pseudo-terminal, the device path removed) raises
:class:`PortLost`; the caller closes and reopens with backoff.
"""

from __future__ import annotations

import asyncio
import errno
import os
import termios
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

import serial

from heatgate.backoff import Backoff
from heatgate.drivers.reading import DriverError

__all__ = [
    "REOPEN_MAX_S",
    "REOPEN_MIN_S",
    "LineSettings",
    "PortLost",
    "PortUnavailable",
    "SerialLink",
    "line_settings",
]

READ_CHUNK_BYTES = 4096

REOPEN_MIN_S: Final = 0.5
REOPEN_MAX_S: Final = 5.0
"""The cap on the wait between tries to reopen a local serial port. A try is one ``open(2)`` of a
device node on this gateway, with no server to spare and no fleet to spread (the jitter of
:mod:`heatgate.backoff` is for those), so the cap is what bounds how long a replugged cable waits
to be read again: at most this long, not the 30 s of a network retry."""


class PortUnavailable(DriverError):
    """The port cannot be opened (missing path, permission, not a tty)."""

    def __init__(self, message: str, *, path: str, errno_: int | None = None, source: str = "") -> None:
        super().__init__(message, source=source)
        self.path = path
        self.errno = errno_


class PortLost(DriverError):
    """An open port stopped working (unplugged, hung up)."""

    def __init__(self, message: str, *, path: str, source: str = "") -> None:
        super().__init__(message, source=source)
        self.path = path


@dataclass(frozen=True, slots=True)
class LineSettings:
    baudrate: int
    bytesize: Literal[7, 8]
    parity: Literal["N", "E", "O"]
    stopbits: Literal[1, 2] = 1


def line_settings(spec: str, baudrate: int) -> LineSettings:
    """``"8N1"`` / ``"7E1"`` and a baud rate as :class:`LineSettings`."""
    if len(spec) != 3 or spec[0] not in "78" or spec[1] not in "NEO" or spec[2] not in "12":
        raise ValueError(f"serial settings must look like 8N1 or 7E1, got {spec!r}")
    return LineSettings(
        baudrate=baudrate,
        bytesize=7 if spec[0] == "7" else 8,
        parity=spec[1],  # type: ignore[arg-type]
        stopbits=1 if spec[2] == "1" else 2,
    )


class SerialLink:
    """One open serial port, read and written from the event loop.

    Use ``async with SerialLink(...)`` or :meth:`open` / :meth:`close`. :meth:`read` waits
    for the next chunk of bytes; :meth:`write` writes all bytes, waiting while the kernel
    buffer is full.
    """

    def __init__(self, path: str, settings: LineSettings, *, source: str = "") -> None:
        self.path = path
        self.settings = settings
        self.source = source
        self._serial: serial.Serial | None = None
        self._fd: int = -1

    @property
    def is_open(self) -> bool:
        return self._serial is not None

    def open(self) -> None:
        """Open and configure the port; raise :class:`PortUnavailable` if it cannot be."""
        if self._serial is not None:
            return
        s = self.settings
        try:
            port = serial.Serial(
                self.path,
                baudrate=s.baudrate,
                bytesize=serial.SEVENBITS if s.bytesize == 7 else serial.EIGHTBITS,
                parity={"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD}[s.parity],
                stopbits=serial.STOPBITS_ONE if s.stopbits == 1 else serial.STOPBITS_TWO,
                timeout=0,
                write_timeout=0,
            )
        except (serial.SerialException, OSError, ValueError) as exc:
            raise PortUnavailable(
                f"cannot open {self.path}: {exc}",
                path=self.path,
                errno_=getattr(exc, "errno", None),
                source=self.source,
            ) from exc
        self._serial = port
        self._fd = port.fileno()
        # pyserial leaves VMIN=0 (a read of an empty port returns 0 bytes, like end of file).
        # VMIN=1 makes an empty non-blocking read raise EAGAIN, so 0 bytes means hung up.
        try:
            attrs = termios.tcgetattr(self._fd)
            attrs[6][termios.VMIN] = 1
            attrs[6][termios.VTIME] = 0
            termios.tcsetattr(self._fd, termios.TCSANOW, attrs)
        except termios.error as exc:
            self.close()
            raise PortUnavailable(f"cannot configure {self.path}: {exc}", path=self.path, source=self.source) from exc

    def close(self) -> None:
        port, self._serial = self._serial, None
        if port is None:
            return
        loop = _running_loop()
        if loop is not None:
            loop.remove_reader(self._fd)
            loop.remove_writer(self._fd)
        self._fd = -1
        try:
            port.close()
        except (serial.SerialException, OSError):
            pass  # the device is gone already; closing is best effort

    async def read(self) -> bytes:
        """The next chunk of bytes (at least one); :class:`PortLost` when the port is gone."""
        while True:
            fd = self._require_fd()
            try:
                data = os.read(fd, READ_CHUNK_BYTES)
            except BlockingIOError:
                await self._wait(fd, writable=False)
                continue
            except OSError as exc:
                raise PortLost(
                    f"{self.path}: {os.strerror(exc.errno or errno.EIO)}", path=self.path, source=self.source
                ) from exc
            if not data:
                raise PortLost(f"{self.path}: end of file (hung up)", path=self.path, source=self.source)
            return data

    async def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            fd = self._require_fd()
            try:
                written = os.write(fd, view)
            except BlockingIOError:
                await self._wait(fd, writable=True)
                continue
            except OSError as exc:
                raise PortLost(
                    f"{self.path}: {os.strerror(exc.errno or errno.EIO)}", path=self.path, source=self.source
                ) from exc
            view = view[written:]

    def _require_fd(self) -> int:
        if self._serial is None:
            raise PortLost(f"{self.path}: not open", path=self.path, source=self.source)
        return self._fd

    async def _wait(self, fd: int, *, writable: bool) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()

        def wake() -> None:
            if not ready.done():
                ready.set_result(None)

        if writable:
            loop.add_writer(fd, wake)
        else:
            loop.add_reader(fd, wake)
        try:
            await ready
        finally:
            if self._fd == fd:
                (loop.remove_writer if writable else loop.remove_reader)(fd)

    def __enter__(self) -> SerialLink:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class PortKeeper:
    """Keeps a serial port open for a session: opens it, runs ``session(link)``, and when the port
    goes away (unplugged) or never came, reopens it with backoff. Each transition is logged once
    each way (``<event_prefix>.port_unavailable`` / ``.port_open`` / ``.port_lost``), not once
    per try. ``state`` is ``closed``, ``open``, ``unavailable`` or ``lost`` (a session may set its
    own, e.g. ``no_controller``); ``losses`` counts ports lost while open; ``last_error`` says why
    the port is not open (None while it is)."""

    def __init__(
        self, path: str, settings: LineSettings, *, source: str, event_prefix: str, backoff: Backoff, log: Any
    ) -> None:
        self.path = path
        self.settings = settings
        self.source = source
        self.event_prefix = event_prefix
        self.backoff = backoff
        self.log = log
        self.state = "closed"
        self.losses = 0
        self.last_error: str | None = None

    async def run(
        self, session: Callable[[SerialLink], Awaitable[None]], *, after_session: Callable[[], None] | None = None
    ) -> None:
        """Run ``session`` on the open port for ever (until cancelled). A session that returns or
        raises PortLost (alone or in an exception group) is followed by a reopen after backoff."""
        link = SerialLink(self.path, self.settings, source=self.source)
        was_down = False
        try:
            while True:
                try:
                    link.open()
                except PortUnavailable as exc:
                    if not was_down:
                        self.log.warning(
                            f"{self.event_prefix}.port_unavailable",
                            source=self.source,
                            port_path=self.path,
                            errno=exc.errno,
                        )
                        was_down = True
                    self.state = "unavailable"
                    self.last_error = str(exc)
                    await asyncio.sleep(self.backoff.next_delay_s())
                    continue
                self.state = "open"
                self.last_error = None
                self.log.info(f"{self.event_prefix}.port_open", source=self.source, port_path=self.path, back=was_down)
                was_down = False
                try:
                    await session(link)
                except* PortLost as lost:
                    self.losses += 1
                    self.state = "lost"
                    self.last_error = str(lost.exceptions[0])
                    was_down = True
                    self.log.warning(f"{self.event_prefix}.port_lost", source=self.source, port_path=self.path)
                finally:
                    if after_session is not None:
                        after_session()
                    link.close()
                await asyncio.sleep(self.backoff.next_delay_s())
        finally:
            link.close()
            self.state = "closed"
