"""A broker that accepts the connection and never acknowledges anything (fault injection)."""

from __future__ import annotations

import asyncio


class BlackHoleBroker:
    """Answers CONNECT with a successful CONNACK, then reads and swallows everything (no PUBACK,
    no SUBACK, no PINGRESP). Counts the PUBLISH packets it swallowed."""

    def __init__(self, *, answer_pings: bool = False, ack_first: int = 0) -> None:
        self.answer_pings = answer_pings
        """Answer PINGREQ: the connection then looks alive to the client's keepalive."""
        self.ack_first = ack_first
        """Acknowledge the first N QoS 1 PUBLISHes of each connection (e.g. the birth message)."""
        self.port = 0
        self.connections = 0
        self.publishes = 0
        self._server: asyncio.AbstractServer | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            first = True
            acked = 0
            while True:
                header = await reader.readexactly(1)
                length, multiplier = 0, 1
                while True:
                    byte = (await reader.readexactly(1))[0]
                    length += (byte & 0x7F) * multiplier
                    multiplier *= 128
                    if not byte & 0x80:
                        break
                body = await reader.readexactly(length)
                if first:
                    first = False
                    mqtt5 = len(body) > 6 and body[6] == 5
                    writer.write(b"\x20\x03\x00\x00\x00" if mqtt5 else b"\x20\x02\x00\x00")
                    await writer.drain()
                elif header[0] >> 4 == 3:
                    self.publishes += 1
                    qos = (header[0] >> 1) & 3
                    if qos and acked < self.ack_first:
                        acked += 1
                        topic_length = int.from_bytes(body[:2], "big")
                        packet_id = body[2 + topic_length : 4 + topic_length]
                        writer.write(b"\x40\x02" + packet_id)
                        await writer.drain()
                elif header[0] >> 4 == 12 and self.answer_pings:
                    writer.write(b"\xd0\x00")
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in self._writers:
                writer.close()
            await self._server.wait_closed()
