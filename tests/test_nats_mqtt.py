"""heatgate's publisher, unchanged, against NATS's MQTT listener (MQTT 3.1.1, JetStream behind):
delivery from the real buffer to an MQTT subscriber and to a JetStream consumer, retained birth and
offline, the persistent session, the will on kill -9, and the differences from Mosquitto."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import paho.mqtt.client as mqtt
import pytest

from bench.fleet_support.backend import JetStreamBackend, subject_to_topic, topic_to_subject
from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.memory_buffer import fault_record, open_real_buffer, telemetry_record
from heatgate.agent.devtools.nats import NatsNode, nats_server
from heatgate.agent.devtools.subscriber import Received, Subscriber
from heatgate.agent.publish.client import MqttClient
from heatgate.agent.publish.decode import decode_message
from heatgate.agent.publish.errors import ConnectError
from heatgate.agent.publish.publisher import Publisher
from tests.support.leaks import run_async

pytestmark = pytest.mark.broker
GW = "gw-nats-0001"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def node(tmp_path: Path) -> Iterator[NatsNode]:
    with nats_server(tmp_path / "nats") as server:
        yield server


def _config(node: NatsNode, **overrides: Any) -> MqttConfig:
    options: dict[str, Any] = {
        "url": node.mqtt_url,
        "protocol": "3.1.1",
        "reconnect_min_s": 0.05,
        "reconnect_max_s": 0.3,
    }
    options.update(overrides)
    return MqttConfig(**options)


def _sub(node: NatsNode, topics: list[str], **kwargs: Any) -> Subscriber:
    return Subscriber("127.0.0.1", node.mqtt_port, topics, protocol=mqtt.MQTTv311, **kwargs)


def _ids(messages: list[Received]) -> list[str]:
    ids: list[str] = []
    for m in messages:
        decoded = decode_message(m.topic, m.payload)
        assert decoded.valid, decoded.error
        ids.extend(r.id for r in decoded.records)
    return ids


def test_delivery_reaches_mqtt_subscribers_and_a_jetstream_consumer(node: NatsNode, tmp_path: Path) -> None:
    records = [telemetry_record(i) for i in range(400)] + [fault_record(1), fault_record(2)]
    expected = {r.id for r in records}
    sub = _sub(node, [f"heatgate/v1/{GW}/#"]).start()

    async def scenario() -> tuple[set[str], int, int, dict[str, Any]]:
        backend = JetStreamBackend([node.url], mqtt_urls=[node.mqtt_url], workers=2, replicas=1)
        await backend.start()
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put(records)
            publisher = Publisher(
                _config(node, max_payload_bytes=4096, inflight_max=4),
                GW,
                buffer,
                version="t",
                health=lambda: {"sources": 1},
            )
            task = asyncio.create_task(publisher.run())
            while await buffer.count() > 0:
                await asyncio.sleep(0.02)
            missing = await backend.wait_for(expected, timeout_s=15)
            status = publisher.status()
            await publisher.stop()
            await task
            return missing, backend.stats.duplicates, backend.stats.invalid, status
        finally:
            await buffer.close()
            await backend.stop()

    try:
        missing, duplicates, invalid, status = run_async(scenario())
        got = sub.wait_for(lambda ms: expected <= set(_ids([m for m in ms if not m.topic.endswith("/state")])))
    finally:
        sub.stop()
    assert missing == set() and duplicates == 0 and invalid == 0
    assert status["published"] == len(records) and status["refused"] == 0
    data = [m for m in got if not m.topic.endswith("/state")]
    assert len(data) > 1  # packed into several messages of at most 4 KiB
    assert all(len(m.payload) <= 4096 and m.qos == 1 for m in data)
    # Faults first, on their own topic.
    assert data[0].topic == f"heatgate/v1/{GW}/service/fault"
    assert sorted(_ids(data)) == sorted(expected)  # nothing twice without a fault


def test_retained_state_is_kept_in_jetstream_and_seen_by_late_subscribers(node: NatsNode, tmp_path: Path) -> None:
    state_topic = f"heatgate/v1/{GW}/state"

    async def scenario(step: str) -> None:
        buffer: Any = await open_real_buffer(tmp_path / step)
        publisher = Publisher(_config(node), GW, buffer, version="7.1", health=lambda: {"sources": 2})
        task = asyncio.create_task(publisher.run())
        try:
            while not publisher.status()["connected"]:
                await asyncio.sleep(0.01)
            if step == "online":
                # "Connected" comes before the birth is published: a subscriber that has seen it
                # (live or retained) means the broker has it, so the next one subscribes late.
                with _sub(node, [state_topic]) as early:
                    await asyncio.to_thread(
                        early.wait_for, lambda ms: any(json.loads(m.payload)["state"] == "online" for m in ms)
                    )
                with _sub(node, [state_topic]) as late:
                    retained = await asyncio.to_thread(late.wait_for, lambda ms: len(ms) >= 1)
                assert retained[0].retain and json.loads(retained[0].payload)["state"] == "online"
                assert json.loads(retained[0].payload)["health"] == {"sources": 2}
                assert decode_message(retained[0].topic, retained[0].payload).valid
            await publisher.stop()
            await task
        finally:
            await buffer.close()

    async def retained_stream_count() -> int:
        nc = await nats.connect(node.url)
        try:
            info = await nc.jetstream().stream_info("$MQTT_rmsgs")
            return int(info.state.messages)
        finally:
            await nc.close()

    run_async(scenario("online"))
    # NATS keeps retained messages in a JetStream stream, one per topic (replaced, not appended).
    assert run_async(retained_stream_count()) == 1
    with _sub(node, [state_topic]) as late:
        retained = late.wait_for(lambda ms: len(ms) >= 1)
    assert retained[0].retain and json.loads(retained[0].payload)["state"] == "offline"
    assert run_async(retained_stream_count()) == 1


def test_persistent_session_queues_commands_while_the_gateway_is_away(node: NatsNode, tmp_path: Path) -> None:
    received: list[tuple[str, bytes]] = []

    async def run_gateway(until: str) -> bool:
        buffer: Any = await open_real_buffer(tmp_path / until)
        publisher = Publisher(_config(node), GW, buffer, version="t", health=dict)

        async def on_command(topic: str, payload: bytes, _props: dict[str, Any]) -> None:
            received.append((topic, payload))

        publisher.on_command = on_command
        task = asyncio.create_task(publisher.run())
        try:
            while not publisher.status()["connected"]:
                await asyncio.sleep(0.01)
            if until == "command":
                deadline = time.monotonic() + 10
                while not received and time.monotonic() < deadline:
                    await asyncio.sleep(0.02)
            else:
                await asyncio.sleep(0.3)  # the SUBSCRIBE is stored in the session
            await publisher.stop()
            await task
        finally:
            await buffer.close()
        return bool(received)

    async def send_command() -> None:
        client = MqttClient(_config(node), client_id="backend-cmd", clean_start=True)
        await client.connect()
        await asyncio.wait_for(client.publish(f"heatgate/v1/{GW}/cmd/ping", b'{"n":1}', qos=1), 5)
        await client.disconnect()

    async def session_present_twice() -> list[bool]:
        found = []
        for _ in range(2):
            client = MqttClient(_config(node), client_id=f"heatgate-{GW}", clean_start=False)
            found.append(await client.connect())
            await client.disconnect()
        return found

    run_async(run_gateway("subscribed"))
    run_async(send_command())  # the gateway is offline now
    assert run_async(run_gateway("command"))
    assert received == [(f"heatgate/v1/{GW}/cmd/ping", b'{"n":1}')]
    assert run_async(session_present_twice()) == [True, True]


_CHILD = """
import asyncio, sys
from heatgate.agent.config import MqttConfig
from heatgate.agent.publish.publisher import Publisher
from heatgate.agent.devtools.memory_buffer import MemoryBuffer

async def main():
    config = MqttConfig(url=sys.argv[1], protocol="3.1.1", keepalive_s=5)
    await Publisher(config, sys.argv[2], MemoryBuffer(), version="t", health=dict).run()

asyncio.run(main())
"""


def test_kill_9_makes_nats_publish_the_offline_will(node: NatsNode) -> None:
    sub = _sub(node, [f"heatgate/v1/{GW}/state"]).start()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, node.mqtt_url, GW],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sub.wait_for(lambda ms: any(json.loads(m.payload)["state"] == "online" for m in ms), timeout_s=20)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        got = sub.wait_for(lambda ms: json.loads(ms[-1].payload)["state"] == "offline", timeout_s=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sub.stop()
    will = got[-1]
    assert json.loads(will.payload) == {
        "schema": "heatgate.state/1",
        "state": "offline",
        "gateway": GW,
        "version": "t",
        "at": None,
        "health": {},
    }
    assert decode_message(will.topic, will.payload).valid


def test_mqtt5_is_refused_and_the_publisher_keeps_its_records(node: NatsNode, tmp_path: Path) -> None:
    events: list[tuple[str, str | None]] = []

    async def scenario() -> tuple[int, int]:
        client = MqttClient(_config(node, protocol="5"), client_id="v5-probe")
        with pytest.raises(ConnectError) as refused:
            await client.connect()
        assert refused.value.reason_code == 0x84  # unsupported protocol version
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put([telemetry_record(i) for i in range(10)])
            publisher = Publisher(
                _config(node, protocol="5"),
                GW,
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, r: events.append((e, r)),
            )
            task = asyncio.create_task(publisher.run())
            while len(events) < 2:
                await asyncio.sleep(0.01)
            await publisher.stop()
            await task
            return await buffer.count(), publisher.status()["published"]
        finally:
            await buffer.close()

    queued, published = run_async(scenario())
    assert (queued, published) == (10, 0)
    assert all(e == "connect_failed" for e, _r in events)


def test_a_dot_in_the_gateway_id_gets_the_connection_closed_and_nothing_is_lost(node: NatsNode, tmp_path: Path) -> None:
    """NATS 2.9 cannot map a topic containing '.' to a subject: the will topic
    (``heatgate/v1/gw.dotted.01/state``) makes it close the connection before CONNACK. This is why
    the config's gateway id pattern refuses dots; the publisher itself must still lose nothing."""
    events: list[str] = []

    async def scenario() -> tuple[int, int]:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put([telemetry_record(i) for i in range(5)])
            publisher = Publisher(
                _config(node),
                "gw.dotted.01",
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, _r: events.append(e),
            )
            task = asyncio.create_task(publisher.run())
            deadline = time.monotonic() + 60
            while len(events) < 2:
                assert time.monotonic() < deadline, f"only {events} within 60 s"
                await asyncio.sleep(0.01)
            await publisher.stop()
            await task
            return await buffer.count(), publisher.status()["published"]
        finally:
            await buffer.close()

    assert run_async(scenario()) == (5, 0)
    assert set(events) == {"connect_failed"}


def test_topic_and_subject_mapping() -> None:
    assert topic_to_subject("heatgate/v1/gw-1/service/fault") == "heatgate.v1.gw-1.service.fault"
    assert subject_to_topic("heatgate.v1.analytics.heat-pump") == "heatgate/v1/analytics/heat-pump"
    with pytest.raises(ValueError):
        topic_to_subject("heatgate/v1/gw.1/state")
