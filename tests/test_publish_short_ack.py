"""The short PUBACK path (agent/publish/short_ack.py) answers exactly as paho's own reading.

For every answer a broker can send (any message id; the short form, a reason code, a reason code
with an empty or a real property list; MQTT 5 and 3.1.1), a :class:`ShortAckClient` and a plain
paho client with the same message in flight report the same thing: the same ``on_publish``
arguments (message id, reason code, properties), the same return code or error, and the same
bookkeeping after it (the message out of flight). And the agent's client is built on it with the
paho that is installed: if a paho upgrade moves the private names it uses, this fails instead of
the drain silently slowing down."""

from __future__ import annotations

from typing import Any

import paho.mqtt.client as mqtt
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion

from heatgate.agent.config import MqttConfig
from heatgate.agent.publish.client import MqttClient
from heatgate.agent.publish.short_ack import SHORT_ACK_READY, ShortAckClient

PUBACK, PUBCOMP = 0x40, 0x70


def _answer(cls: type[mqtt.Client], protocol: mqtt.MQTTProtocolVersion, command: int, packet: bytes) -> tuple[Any, ...]:
    client = cls(CallbackAPIVersion.VERSION2, protocol=protocol)
    heard: list[tuple[Any, ...]] = []

    def on_publish(_c: Any, _u: Any, mid: int, reason: Any, properties: Any) -> None:
        heard.append((mid, reason.value, reason.is_failure, str(reason), properties.pack()))

    client.on_publish = on_publish
    mid = client.publish("t", b"x", qos=2 if command == PUBCOMP else 1).mid  # offline: held in flight
    client._in_packet["command"] = command
    client._in_packet["packet"] = bytearray(packet)
    try:
        outcome: Any = client._packet_handle()
    except Exception as exc:  # paho's own error for a malformed answer must stay the same
        outcome = type(exc).__name__
    return outcome, heard, mid in client._out_messages, client._inflight_messages


_properties = st.sampled_from([b"\x00", b"\x03\x1f\x00\x00", b"\x07\x1f\x00\x04nope", b"\x05\x26\x00\x01k"])


@st.composite
def _packets(draw: st.DrawFn) -> bytes:
    mid = draw(st.sampled_from([1, draw(st.integers(0, 65535))]))  # 1: the id in flight
    head = mid.to_bytes(2, "big")
    form = draw(st.sampled_from(["short", "reason", "reason+empty", "reason+properties", "cut", "junk"]))
    known = st.sampled_from([0x00, 0x10, 0x80, 0x83, 0x87, 0x90, 0x91, 0x92, 0x97, 0x99])
    code = bytes([draw(st.one_of(known, st.integers(0, 255)))])
    if form == "short":
        return head
    if form == "reason":
        return head + code
    if form == "reason+empty":
        return head + code + b"\x00"
    if form == "reason+properties":
        return head + code + draw(_properties)
    if form == "cut":
        return head[:1]
    return head + draw(st.binary(min_size=1, max_size=8))


@settings(max_examples=400, deadline=None)
@given(
    packet=_packets(),
    protocol=st.sampled_from([mqtt.MQTTv5, mqtt.MQTTv311]),
    command=st.sampled_from([PUBACK, PUBCOMP]),
)
def test_every_answer_is_reported_as_paho_reports_it(
    packet: bytes, protocol: mqtt.MQTTProtocolVersion, command: int
) -> None:
    assert _answer(ShortAckClient, protocol, command, packet) == _answer(mqtt.Client, protocol, command, packet)


def test_the_agents_client_reads_answers_on_the_short_path_with_the_installed_paho() -> None:
    assert SHORT_ACK_READY
    client = MqttClient(MqttConfig(url="mqtt://127.0.0.1:1"))
    assert isinstance(client._client, ShortAckClient)
    # It is taken: a plain Success answer makes no new reason code (the same object each time).
    reasons: list[Any] = []
    paho = client._client
    paho.on_publish = lambda _c, _u, _mid, reason, _p: reasons.append(reason)
    for _ in range(2):
        paho.publish("t", b"x", qos=1)
    for mid in (1, 2):
        paho._in_packet["command"] = PUBACK
        paho._in_packet["packet"] = bytearray(mid.to_bytes(2, "big") + b"\x00\x00")
        paho._packet_handle()
    assert len(reasons) == 2 and reasons[0] is reasons[1] and reasons[0].value == 0
