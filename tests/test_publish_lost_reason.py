"""The reason a lost connection gives is paho's own error, not a generic one: paho reports a
socket error only in its log, which the client keeps (errors only) for the reason."""

from __future__ import annotations

import asyncio
import socket
import struct

from heatgate.agent.config import MqttConfig
from heatgate.agent.publish.client import MqttClient
from tests.support.leaks import run_async


async def _broker_that_resets_after_connack() -> tuple[asyncio.AbstractServer, int, asyncio.Event]:
    """Answers CONNECT with a successful MQTT 5 CONNACK, then resets the connection (RST)."""
    may_reset = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readexactly(2)  # CONNECT's header and (short) length, enough to answer
        writer.write(b"\x20\x03\x00\x00\x00")
        await writer.drain()
        await may_reset.wait()
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], may_reset


def test_a_reset_connection_is_lost_with_the_socket_error_as_its_reason() -> None:
    async def scenario() -> str:
        server, port, may_reset = await _broker_that_resets_after_connack()
        lost: asyncio.Future[str] = asyncio.get_running_loop().create_future()

        def on_lost(reason: str) -> None:
            if not lost.done():
                lost.set_result(reason)

        client = MqttClient(MqttConfig(url=f"mqtt://127.0.0.1:{port}"), on_lost=on_lost)
        try:
            await client.connect()
            may_reset.set()
            return await asyncio.wait_for(lost, 10)
        finally:
            await client.disconnect()
            server.close()
            await server.wait_closed()

    reason = run_async(scenario())
    assert "reset" in reason.lower(), reason  # paho's "failed to receive on socket: [Errno 104] ..."
