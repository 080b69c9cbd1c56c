"""A small client of the Z-Wave JS server's WebSocket API (``@zwave-js/server``).

One connection, one reader task: results resolve the future of their ``messageId``; events go
to the ``on_event`` callback, awaited in order (a slow consumer slows the reader, which is the
back-pressure: nothing queues without bound). The schema is pinned with ``set_api_schema``
before anything else is sent.

    async with ZwaveJsClient.connect("ws://127.0.0.1:3000", on_event=handle) as client:
        state = await client.start_listening()
        await client.wait_closed()          # raises ServerGone when the server goes away
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI

from heatgate.drivers.reading import DriverError
from heatgate.drivers.zwavejs.messages import (
    SCHEMA_VERSION,
    Event,
    EventMessage,
    ResultMessage,
    ServerState,
    VersionMessage,
    decode_as,
    decode_event,
    decode_incoming,
    encode_command,
)

__all__ = ["ServerCommandFailed", "ServerGone", "ZwaveJsClient", "ZwaveJsError"]

MAX_MESSAGE_BYTES = 32 * 1024 * 1024
"""The state of a large network (every node's values and metadata) is several MB."""

EventHandler = Callable[[Event], Awaitable[None]]


class ZwaveJsError(DriverError):
    """Root of the Z-Wave JS client's errors; ``url`` is the server's."""

    def __init__(self, message: str, *, url: str, source: str = "") -> None:
        super().__init__(message, source=source)
        self.url = url


class ServerGone(ZwaveJsError):
    """The server could not be reached, refused the schema, or closed the connection."""


class ServerCommandFailed(ZwaveJsError):
    """The server answered a command with ``success: false`` (or did not answer in time)."""

    def __init__(self, message: str, *, url: str, command: str, error_code: str | None) -> None:
        super().__init__(f"{command}: {message}", url=url)
        self.command = command
        self.error_code = error_code


async def _ignore(_event: Event) -> None:
    return None


class ZwaveJsClient:
    """A connected, schema-pinned client. Build it with :meth:`connect`."""

    def __init__(
        self,
        ws: ClientConnection,
        version: VersionMessage,
        *,
        url: str,
        request_timeout_s: float,
        on_event: EventHandler,
    ) -> None:
        self.url = url
        self.version = version
        self._ws = ws
        self._request_timeout_s = request_timeout_s
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._pending: dict[str, asyncio.Future[ResultMessage]] = {}
        self._closed = asyncio.Event()
        self._close_reason = ""
        self.bad_messages = 0

    @classmethod
    @contextlib.asynccontextmanager
    async def connect(
        cls,
        url: str,
        *,
        on_event: EventHandler = _ignore,
        open_timeout_s: float = 10.0,
        request_timeout_s: float = 30.0,
        schema_version: int = SCHEMA_VERSION,
    ) -> AsyncIterator[ZwaveJsClient]:
        """Connect, read the server's version, pin ``schema_version``. Raises :class:`ServerGone`."""
        try:
            ws = await connect(
                url, open_timeout=open_timeout_s, max_size=MAX_MESSAGE_BYTES, ping_interval=20, ping_timeout=20
            )
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            raise ServerGone(f"cannot connect: {exc}", url=url) from None
        try:
            version = await cls._read_version(ws, url, open_timeout_s, schema_version)
            client = cls(ws, version, url=url, request_timeout_s=request_timeout_s, on_event=on_event)
            reader = asyncio.create_task(client._read_loop(), name="zwavejs-reader")
            try:
                await client.command("set_api_schema", schemaVersion=schema_version)
                yield client
            finally:
                reader.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reader
        finally:
            await ws.close()

    @staticmethod
    async def _read_version(ws: ClientConnection, url: str, timeout_s: float, schema_version: int) -> VersionMessage:
        try:
            first = await asyncio.wait_for(ws.recv(), timeout_s)
            version = decode_incoming(first)
        except (ConnectionClosed, TimeoutError) as exc:
            raise ServerGone(f"no version message: {exc!r}", url=url) from None
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ServerGone(f"first message is not a version message: {exc}", url=url) from None
        if not isinstance(version, VersionMessage):
            raise ServerGone(f"first message is a {type(version).__name__}, not the version", url=url)
        if not version.minSchemaVersion <= schema_version <= version.maxSchemaVersion:
            raise ServerGone(
                f"server {version.serverVersion} speaks schema {version.minSchemaVersion}..{version.maxSchemaVersion},"
                f" heatgate needs {schema_version}",
                url=url,
            )
        return version

    async def _read_loop(self) -> None:
        try:
            async for data in self._ws:
                try:
                    message = decode_incoming(data)
                    if isinstance(message, ResultMessage):
                        future = self._pending.pop(message.messageId, None)
                        if future is not None and not future.done():
                            future.set_result(message)
                    elif isinstance(message, EventMessage):
                        await self._on_event(decode_event(message.event))
                except (msgspec.DecodeError, msgspec.ValidationError):
                    self.bad_messages += 1
            self._close_reason = "the server closed the connection"
        except ConnectionClosed as exc:
            self._close_reason = f"connection lost: {exc}"
        finally:
            self._closed.set()
            for future in self._pending.values():
                if not future.done():
                    future.set_exception(ServerGone(self._close_reason or "closed", url=self.url))
            self._pending.clear()

    async def wait_closed(self) -> None:
        """Wait until the connection ends, then raise :class:`ServerGone`."""
        await self._closed.wait()
        raise ServerGone(self._close_reason or "closed", url=self.url)

    async def command(self, command: str, *, timeout_s: float | None = None, **args: Any) -> dict[str, Any]:
        """Send ``command`` with ``args``; its ``result`` (``{}`` if none). Raises
        :class:`ServerCommandFailed` or :class:`ServerGone`."""
        if self._closed.is_set():
            raise ServerGone(self._close_reason or "closed", url=self.url)
        message_id = str(next(self._ids))
        future: asyncio.Future[ResultMessage] = asyncio.get_running_loop().create_future()
        self._pending[message_id] = future
        try:
            await self._ws.send(encode_command(message_id, command, args).decode())
            result = await asyncio.wait_for(future, timeout_s or self._request_timeout_s)
        except ConnectionClosed as exc:
            raise ServerGone(f"connection lost: {exc}", url=self.url) from None
        except TimeoutError:
            raise ServerCommandFailed(
                "no answer in time", url=self.url, command=command, error_code="timeout"
            ) from None
        finally:
            self._pending.pop(message_id, None)
        if not result.success:
            detail = result.zwaveErrorMessage or result.message or result.errorCode or "failed"
            raise ServerCommandFailed(detail, url=self.url, command=command, error_code=result.errorCode)
        return result.result or {}

    async def start_listening(self) -> ServerState:
        """Subscribe to every event; the network's state (controller, nodes, their values)."""
        result = await self.command("start_listening")
        return decode_as(result["state"], ServerState)
