"""The host side of the Serial API link: ACK every good frame, NAK a bad checksum, send
requests with ACK timeout and retransmission (3 tries, waiting 100 ms + n x 1000 ms), wait for
responses, and run the start-up sequence (NAK, soft reset, GetControllerId)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from heatgate.drivers.serialport import SerialLink
from heatgate.drivers.zwave import frames
from heatgate.drivers.zwave.frames import ACK, NAK, Control, DataFrame, FrameType, ZwaveError

__all__ = [
    "FUNC_APPLICATION_COMMAND",
    "FUNC_BRIDGE_COMMAND",
    "FUNC_GET_CONTROLLER_ID",
    "FUNC_SERIAL_API_STARTED",
    "FUNC_SOFT_RESET",
    "HostStats",
    "RequestFailed",
    "ZwaveHost",
]

FUNC_APPLICATION_COMMAND = 0x04
FUNC_SOFT_RESET = 0x08
FUNC_SERIAL_API_STARTED = 0x0A
FUNC_GET_CONTROLLER_ID = 0x20
FUNC_BRIDGE_COMMAND = 0xA8

BYTE_TIMEOUT_S = 1.5
"""A partial frame older than this is dropped (the Serial API's receive timeout)."""


class RequestFailed(ZwaveError):
    def __init__(self, message: str, *, function: int, tries: int) -> None:
        super().__init__(message)
        self.function = function
        self.tries = tries


@dataclass
class HostStats:
    frames_ok: int = 0
    checksum_errors: int = 0
    garbage_bytes: int = 0
    naks: int = 0
    cans: int = 0
    ack_timeouts: int = 0
    response_timeouts: int = 0
    retransmissions: int = 0
    requests_failed: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "extra"}


class ZwaveHost:
    """One session on an open link. Run :meth:`read_loop` as a task; call :meth:`request`."""

    def __init__(
        self,
        link: SerialLink,
        on_request: Callable[[DataFrame], Awaitable[None]],
        *,
        stats: HostStats | None = None,
        ack_timeout_s: float = 1.6,
        response_timeout_s: float = 10.0,
        retry_base_s: float = 0.1,
        retry_step_s: float = 1.0,
        max_tries: int = 3,
    ) -> None:
        self.link = link
        self.on_request = on_request
        self.stats = stats or HostStats()
        self.ack_timeout_s = ack_timeout_s
        self.response_timeout_s = response_timeout_s
        self.retry_base_s = retry_base_s
        self.retry_step_s = retry_step_s
        self.max_tries = max_tries
        self._send_lock = asyncio.Lock()
        self._ack: asyncio.Future[Control] | None = None
        self._response: tuple[int, asyncio.Future[DataFrame]] | None = None
        self._started = asyncio.Event()

    def retry_delay_s(self, retransmission: int) -> float:
        """Wait before retransmission number ``retransmission`` (0 = the first)."""
        return self.retry_base_s + retransmission * self.retry_step_s

    async def request(self, function: int, payload: bytes = b"", *, response: bool = True) -> DataFrame | None:
        """Send a request; retransmit on NAK, CAN or a missing ACK; return the response frame."""
        data = frames.encode(DataFrame(FrameType.REQUEST, function, payload))
        loop = asyncio.get_running_loop()
        async with self._send_lock:
            reply: asyncio.Future[DataFrame] = loop.create_future()
            self._response = (function, reply) if response else None
            try:
                for attempt in range(self.max_tries):
                    if attempt:
                        self.stats.retransmissions += 1
                        await asyncio.sleep(self.retry_delay_s(attempt - 1))
                    self._ack = loop.create_future()
                    await self.link.write(data)
                    try:
                        control = await asyncio.wait_for(self._ack, self.ack_timeout_s)
                    except TimeoutError:
                        self.stats.ack_timeouts += 1
                        continue
                    if control is Control.ACK:
                        break
                    if control is Control.NAK:
                        self.stats.naks += 1
                    else:
                        self.stats.cans += 1
                else:
                    self.stats.requests_failed += 1
                    raise RequestFailed(
                        f"function 0x{function:02x} not acknowledged after {self.max_tries} tries",
                        function=function,
                        tries=self.max_tries,
                    )
                if not response:
                    return None
                try:
                    return await asyncio.wait_for(reply, self.response_timeout_s)
                except TimeoutError:
                    self.stats.response_timeouts += 1
                    self.stats.requests_failed += 1
                    raise RequestFailed(
                        f"no response to function 0x{function:02x}", function=function, tries=self.max_tries
                    ) from None
            finally:
                self._ack = None
                self._response = None

    async def start_up(self, *, reset_wait_s: float = 1.5) -> bytes:
        """NAK (clears a half-sent frame in the controller), soft reset, wait for the restart
        (SerialApiStarted or ``reset_wait_s``), then GetControllerId; returns its payload
        (home id, 4 bytes, and the controller's node id)."""
        await self.link.write(bytes([NAK]))
        self._started.clear()
        await self.request(FUNC_SOFT_RESET, response=False)
        try:
            await asyncio.wait_for(self._started.wait(), reset_wait_s)
        except TimeoutError:
            pass  # older controllers do not announce their restart
        reply = await self.request(FUNC_GET_CONTROLLER_ID)
        assert reply is not None
        if len(reply.payload) < 5:
            raise ZwaveError(f"GetControllerId response of {len(reply.payload)} bytes")
        return reply.payload

    async def read_loop(self) -> None:
        """Read until the link is lost (raises :class:`drivers.serialport.PortLost`)."""
        buffer = bytearray()
        while True:
            if buffer:
                try:
                    chunk = await asyncio.wait_for(self.link.read(), BYTE_TIMEOUT_S)
                except TimeoutError:
                    del buffer[:1]  # a stale partial frame: drop its start and resync
                    self.stats.garbage_bytes += 1
                    chunk = b""
            else:
                chunk = await self.link.read()
            buffer += chunk
            await self._drain(buffer)

    async def _drain(self, buffer: bytearray) -> None:
        while buffer:
            try:
                consumed, frame = frames.decode(buffer)
            except frames.ZwaveChecksumError as exc:
                del buffer[: exc.consumed]
                self.stats.checksum_errors += 1
                await self.link.write(bytes([NAK]))
                continue
            if consumed == 0:
                return
            del buffer[:consumed]
            if frame is None:
                self.stats.garbage_bytes += consumed
            elif isinstance(frame, Control):
                if self._ack is not None and not self._ack.done():
                    self._ack.set_result(frame)
            else:
                self.stats.frames_ok += 1
                await self.link.write(bytes([ACK]))
                await self._dispatch(frame)

    async def _dispatch(self, frame: DataFrame) -> None:
        if frame.type is FrameType.RESPONSE:
            waiting = self._response
            if waiting is not None and waiting[0] == frame.function and not waiting[1].done():
                waiting[1].set_result(frame)
            return
        if frame.function == FUNC_SERIAL_API_STARTED:
            self._started.set()
            return
        await self.on_request(frame)
