"""At least once from the real encrypted buffer to a real Mosquitto: outage, faults first, ACL
refusal, clean stop and kill -9 (LWT)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.memory_buffer import fault_record, open_real_buffer, telemetry_record
from heatgate.agent.devtools.subscriber import Received, Subscriber
from heatgate.agent.publish.decode import Deduplicator, decode_message
from heatgate.agent.publish.publisher import Publisher
from tests.support.leaks import run_async

pytestmark = pytest.mark.broker
GW = "gw-test-0001"
REPO = Path(__file__).resolve().parents[1]


def _plain(broker: Broker, **overrides: Any) -> MqttConfig:
    options: dict[str, Any] = {"url": broker.url, "reconnect_min_s": 0.05, "reconnect_max_s": 0.3}
    options.update(overrides)
    return MqttConfig(**options)


def _record_ids(messages: list[Received], suffix: str = "") -> list[str]:
    ids: list[str] = []
    for m in messages:
        if m.topic.endswith("/state") or not m.topic.endswith(suffix):
            continue
        decoded = decode_message(m.topic, m.payload)
        assert decoded.valid, decoded.error
        ids.extend(r.id for r in decoded.records)
    return ids


class PersistentSubscriber(Subscriber):
    """A subscriber whose session (and queue) the broker keeps across the broker's restart."""

    def start(self, timeout_s: float = 10.0) -> PersistentSubscriber:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 300
        self.client.connect(self._host, self._port, keepalive=30, clean_start=False, properties=props)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError("subscriber did not connect and subscribe")
        return self


def test_broker_outage_mid_drain_loses_nothing(broker_factory: Callable[..., Broker], tmp_path: Path) -> None:
    broker = broker_factory("plain", persistence=True)
    total = 3000
    sub = PersistentSubscriber(
        "127.0.0.1", broker.port, [f"heatgate/v1/{GW}/telemetry"], client_id=f"persist-{uuid.uuid4().hex[:6]}"
    ).start()
    sub.client.reconnect_delay_set(0.05, 0.2)  # type: ignore[arg-type]  # seconds, floats work; the stub says int
    events: list[str] = []

    async def scenario() -> dict[str, Any]:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put([telemetry_record(i) for i in range(total)])
            publisher = Publisher(
                _plain(broker, max_payload_bytes=2048, inflight_max=4),
                GW,
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, _r: events.append(e),
            )
            task = asyncio.create_task(publisher.run())
            while publisher.status()["published"] < total // 10:
                await asyncio.sleep(0.005)
            await asyncio.to_thread(broker.stop)  # in the middle of the drain
            assert await buffer.count() > 0
            await asyncio.sleep(0.3)
            await asyncio.to_thread(broker.start)
            while await buffer.count() > 0:
                await asyncio.sleep(0.05)
            status = publisher.status()
            await publisher.stop()
            await task
            return status
        finally:
            await buffer.close()

    try:
        status = run_async(scenario())
        got = sub.wait_for(lambda ms: len(set(_record_ids(ms))) >= total, timeout_s=20)
    finally:
        sub.stop()
    ids = _record_ids(got)
    assert len(set(ids)) == total  # none lost
    dedup = Deduplicator()
    fresh = [i for i in ids if dedup.first_time(i)]
    assert len(fresh) == total and dedup.duplicates == len(ids) - total  # duplicates only by id
    assert "disconnected" in events and events.count("connected") >= 2
    assert status["reconnects"] >= 2


def test_fault_overtakes_a_large_backlog(plain_broker: Broker, tmp_path: Path) -> None:
    backlog = 20_000
    inflight_max = 8
    sub = Subscriber("127.0.0.1", plain_broker.port, [f"heatgate/v1/{GW}/#"]).start()
    marks: dict[str, Any] = {}

    async def scenario() -> None:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put([telemetry_record(i) for i in range(backlog)])
            publisher = Publisher(
                _plain(plain_broker, max_payload_bytes=4096, inflight_max=inflight_max),
                GW,
                buffer,
                version="t",
                health=dict,
            )
            task = asyncio.create_task(publisher.run())
            while publisher.status()["published_messages"] < 20:
                await asyncio.sleep(0.001)
            fault = fault_record(7)
            await buffer.put([fault])
            marks["received_at_put"] = len(sub.messages)
            marks["fault_id"] = fault.id
            publisher.wake()
            while await buffer.count() > 0:
                await asyncio.sleep(0.05)
            await publisher.stop()
            await task
        finally:
            await buffer.close()

    try:
        run_async(scenario())
        got = sub.wait_for(lambda ms: len(_record_ids(ms, "/telemetry")) >= backlog, timeout_s=20)
    finally:
        sub.stop()
    topics = [m.topic for m in got]
    fault_index = next(i for i, t in enumerate(topics) if t.endswith("/service/fault"))
    telemetry_after = sum(1 for t in topics[fault_index:] if t.endswith("/telemetry"))
    assert marks["fault_id"] in _record_ids(got[fault_index : fault_index + 1])
    # Behind the fault: the in-flight window and at most one short round, not the backlog.
    per_message = len(_record_ids([got[fault_index - 1]])) or 1
    assert fault_index - marks["received_at_put"] <= inflight_max + 512 // per_message + 2
    assert telemetry_after > len(topics) // 2


def test_acl_refusal_keeps_records_and_raises_an_alarm(broker_factory: Callable[..., Broker], tmp_path: Path) -> None:
    broker = broker_factory(
        "auth",
        users={"gw": "pw-gw"},
        acl=f"user gw\ntopic readwrite heatgate/v1/{GW}/state\ntopic readwrite heatgate/v1/{GW}/telemetry\n",
    )
    password_file = tmp_path / "password"
    password_file.write_text("pw-gw\n")

    async def scenario() -> tuple[dict[str, Any], int, int]:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put([fault_record(1), fault_record(2)] + [telemetry_record(i) for i in range(50)])
            publisher = Publisher(
                _plain(broker, username="gw", password_file=str(password_file)), GW, buffer, version="t", health=dict
            )
            task = asyncio.create_task(publisher.run())
            while publisher.status()["published"] < 50 or not publisher.status()["alarms"]:
                await asyncio.sleep(0.02)
            status = publisher.status()
            await publisher.stop()
            await task
            return status, await buffer.count("service"), await buffer.count("telemetry")
        finally:
            await buffer.close()

    status, service_left, telemetry_left = run_async(scenario())
    assert service_left == 2 and telemetry_left == 0  # refused records kept, the rest delivered
    assert status["refused"] == 2
    assert "0x87" in status["alarms"][0] and "service/fault" in status["alarms"][0]


def test_clean_stop_publishes_offline_itself(plain_broker: Broker, tmp_path: Path) -> None:
    sub = Subscriber("127.0.0.1", plain_broker.port, [f"heatgate/v1/{GW}/state"]).start()

    async def scenario() -> None:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            publisher = Publisher(_plain(plain_broker), GW, buffer, version="9.9", health=lambda: {"sources": 3})
            task = asyncio.create_task(publisher.run())
            while not publisher.status()["connected"]:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(sub.wait_for, lambda ms: len(ms) >= 1)
            await publisher.stop()
            await task
        finally:
            await buffer.close()

    try:
        run_async(scenario())
        got = sub.wait_for(lambda ms: len(ms) >= 2)
    finally:
        sub.stop()
    birth, last = (json.loads(m.payload) for m in got[:2])
    assert birth["state"] == "online" and birth["version"] == "9.9" and birth["health"] == {"sources": 3}
    assert last["state"] == "offline" and last["gateway"] == GW
    assert decode_message(got[1].topic, got[1].payload).valid
    # Retained: a late subscriber sees offline.
    with Subscriber("127.0.0.1", plain_broker.port, [f"heatgate/v1/{GW}/state"]) as late:
        retained = late.wait_for(lambda ms: len(ms) >= 1)
    assert retained[0].retain and json.loads(retained[0].payload)["state"] == "offline"


_CHILD = """
import asyncio, sys
from heatgate.agent.config import MqttConfig
from heatgate.agent.publish.publisher import Publisher
from heatgate.agent.devtools.memory_buffer import MemoryBuffer

async def main():
    publisher = Publisher(MqttConfig(url=sys.argv[1]), sys.argv[2], MemoryBuffer(), version="t", health=dict)
    await publisher.run()

asyncio.run(main())
"""


def test_kill_9_makes_the_broker_publish_the_offline_will(plain_broker: Broker) -> None:
    sub = Subscriber("127.0.0.1", plain_broker.port, [f"heatgate/v1/{GW}/state"]).start()
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, plain_broker.url, GW],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        sub.wait_for(lambda ms: any(json.loads(m.payload)["state"] == "online" for m in ms), timeout_s=20)
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        killed_at = time.monotonic()
        got = sub.wait_for(lambda ms: json.loads(ms[-1].payload)["state"] == "offline", timeout_s=10)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        sub.stop()
    will = got[-1]
    assert will.at_monotonic >= killed_at - 0.5
    assert json.loads(will.payload) == {
        "schema": "heatgate.state/1",
        "state": "offline",
        "gateway": GW,
        "version": "t",
        "at": None,
        "health": {},
    }
    assert decode_message(will.topic, will.payload).valid
