"""The gateway never consumes a topic it publishes (issue 14: subscribed to ``cmd/+``, it received
its own ``cmd/response``, refused it as malformed and answered the refusal, for ever). Against a
real Mosquitto, under MQTT 5 and 3.1.1, with the real command processor behind the publisher,
as the daemon wires it."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any, Literal

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from heatgate.agent.commands.catalog import COMMANDS
from heatgate.agent.commands.dispatch import CommandProcessor, decode_response
from heatgate.agent.commands.envelope import encode_envelope
from heatgate.agent.commands.nonces import NonceStore
from heatgate.agent.commands.sign import sign_envelope
from heatgate.agent.commands.verify import CommandVerifier
from heatgate.agent.commands.wiring import answer
from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.memory_buffer import MemoryBuffer
from heatgate.agent.devtools.subscriber import Received, Subscriber
from heatgate.agent.publish.client import MqttClient
from heatgate.agent.publish.publisher import Publisher
from tests.support.commands import AuditLog, Keys
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

pytestmark = pytest.mark.broker
GW = "gw-cmd-0001"
CMD = f"heatgate/v1/{GW}/cmd"
RESPONSE = f"{CMD}/response"
KEYS = Keys()
SILENCE_S = 3.0
"""How long the response topic must stay quiet after the last expected message."""


Protocol = Literal["5", "3.1.1"]


def _config(broker: Broker, protocol: Protocol) -> MqttConfig:
    return MqttConfig(url=broker.url, protocol=protocol, reconnect_min_s=0.05, reconnect_max_s=0.3)


def _paho_protocol(protocol: Protocol) -> mqtt.MQTTProtocolVersion:
    return mqtt.MQTTv5 if protocol == "5" else mqtt.MQTTv311


def _signed_ping() -> bytes:
    return encode_envelope(sign_envelope(KEYS.command, target=GW, command="ping", issued_at=int(time.time())))


def _send(backend: Subscriber, topic: str, payload: bytes, *, correlation: bytes | None = None) -> None:
    """Publish as the backend (QoS 1, PUBACK awaited); correlation data only under MQTT 5."""
    properties = None
    if correlation is not None and backend.client.protocol == mqtt.MQTTv5:
        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = correlation
    backend.client.publish(topic, payload, qos=1, properties=properties).wait_for_publish(5)


def _responses(messages: list[Received]) -> list[Received]:
    return [m for m in messages if m.topic == RESPONSE]


class Gateway:
    """A Publisher with the real CommandProcessor behind ``on_command`` (what the daemon wires),
    counting how often the processor was reached."""

    def __init__(self, broker: Broker, protocol: Protocol) -> None:
        self.config = _config(broker, protocol)
        self.audit = AuditLog()
        self.handled: list[str] = []

    async def start(self) -> None:
        verifier = CommandVerifier(GW, KEYS.command_keys(), KEYS.approval_keys(), await NonceStore.load(MemoryState()))
        self.processor = CommandProcessor(verifier, {}, self.audit)
        self.publisher = Publisher(self.config, GW, MemoryBuffer(), version="t", health=dict)
        self.publisher.on_command = self._on_command
        self.task = asyncio.create_task(self.publisher.run())
        async with asyncio.timeout(10):
            while not self.publisher.status()["connected"]:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.3)  # SUBACK (the adapter does not expose it)

    async def _on_command(self, topic: str, payload: bytes, properties: dict[str, Any]) -> None:
        self.handled.append(topic)
        await answer(self.processor, self.publisher.publish_raw, RESPONSE, payload, properties)

    async def stop(self) -> dict[str, Any]:
        status = self.publisher.status()
        await self.publisher.stop()
        await self.task
        return status


def test_the_gateway_subscribes_to_each_served_command_and_nothing_else() -> None:
    publisher = Publisher(MqttConfig(url="mqtt://127.0.0.1:1"), GW, MemoryBuffer(), version="t", health=dict)
    assert publisher.command_topics == {f"{CMD}/{name}" for name in COMMANDS}
    assert RESPONSE not in publisher.command_topics
    assert all("+" not in t and "#" not in t for t in publisher.command_topics)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_command_round_trip_is_followed_by_silence(broker_factory: Callable[..., Broker], protocol: Protocol) -> None:
    broker = broker_factory("plain")
    backend = Subscriber("127.0.0.1", broker.port, [RESPONSE], protocol=_paho_protocol(protocol)).start()

    async def scenario() -> tuple[Gateway, dict[str, Any]]:
        gateway = Gateway(broker, protocol)
        await gateway.start()
        try:
            # Something on the gateway's own response topic: not a command, never answered.
            await asyncio.to_thread(_send, backend, RESPONSE, b'{"not": "a command"}')
            await asyncio.to_thread(_send, backend, f"{CMD}/no-such-command", b"{}")
            await asyncio.to_thread(_send, backend, f"{CMD}/ping", _signed_ping(), correlation=b"corr-7")
            await asyncio.to_thread(backend.wait_for, lambda ms: len(_responses(ms)) >= 2)
            await asyncio.sleep(SILENCE_S)
        finally:
            status = await gateway.stop()
        return gateway, status

    try:
        gateway, status = run_async(scenario())
        received = _responses(backend.messages)
    finally:
        backend.stop()
    # exactly: the stray message we sent ourselves, then the one answer to the ping; then silence
    assert len(received) == 2, [m.payload for m in received]
    assert received[0].payload == b'{"not": "a command"}'
    response = decode_response(received[1].payload)
    assert (response.command, response.outcome) == ("ping", "done")
    if protocol == "5":
        assert getattr(received[1].properties, "CorrelationData", None) == b"corr-7"
    assert gateway.handled == [f"{CMD}/ping"]
    assert status["stray_messages"] == 0  # not even delivered: the gateway does not subscribe to them


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_an_upgraded_gateway_drops_the_stale_wildcard_of_its_resumed_session(
    broker_factory: Callable[..., Broker], protocol: Protocol
) -> None:
    """An earlier version left ``cmd/+`` in the broker's persistent session, and a response queued
    for it. The upgraded gateway resumes the session: the queued response is counted as stray and
    not answered; the wildcard is removed, so its own responses no longer come back."""
    broker = broker_factory("plain")
    backend = Subscriber("127.0.0.1", broker.port, [RESPONSE], protocol=_paho_protocol(protocol)).start()

    async def old_version() -> None:
        client = MqttClient(_config(broker, protocol), client_id=f"heatgate-{GW}", clean_start=False)
        await client.connect()
        client.subscribe([f"{CMD}/+"])
        await asyncio.sleep(0.3)
        await client.disconnect()

    async def scenario() -> tuple[Gateway, dict[str, Any]]:
        await old_version()
        await asyncio.to_thread(_send, backend, RESPONSE, b'{"queued": "for the old cmd/+"}')
        gateway = Gateway(broker, protocol)
        await gateway.start()
        try:
            await asyncio.to_thread(_send, backend, RESPONSE, b'{"after": "the upgrade"}')
            await asyncio.to_thread(_send, backend, f"{CMD}/ping", _signed_ping(), correlation=b"corr-8")
            await asyncio.to_thread(backend.wait_for, lambda ms: len(_responses(ms)) >= 3)
            await asyncio.sleep(SILENCE_S)
        finally:
            status = await gateway.stop()
        return gateway, status

    try:
        gateway, status = run_async(scenario())
        received = _responses(backend.messages)
    finally:
        backend.stop()
    assert len(received) == 3, [m.payload for m in received]  # our two, one answer; then silence
    assert [json.loads(m.payload) for m in received[:2]] == [{"queued": "for the old cmd/+"}, {"after": "the upgrade"}]
    assert decode_response(received[2].payload).outcome == "done"
    assert gateway.handled == [f"{CMD}/ping"]
    # the queued one reached the gateway through the old session and was dropped, counted;
    # the one after the upgrade did not reach it at all
    assert status["stray_messages"] == 1
