"""``heatgate tail`` against a live publisher on a real Mosquitto: JSON lines, validation,
de-duplication, and an invalid message shown as such."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from heatgate.agent.cli.tail import topics_for
from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.memory_buffer import (
    MemoryBuffer,
    analytics_record,
    fault_record,
    open_real_buffer,
    telemetry_record,
)
from heatgate.agent.publish.publisher import Publisher
from tests.support.leaks import run_async

pytestmark = pytest.mark.broker
GW = "gw-tail-0001"
REPO = Path(__file__).resolve().parents[1]


def _write_config(path: Path, broker: Broker) -> Path:
    path.write_text(
        f'[gateway]\nid = "{GW}"\nregion = "NL-UT"\nstate_dir = "{path.parent}"\n\n[mqtt]\nurl = "{broker.url}"\n'
    )
    return path


def _raw_publish(broker: Broker, messages: list[tuple[str, bytes]], *, retain: bool = False) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        for topic, payload in messages:
            client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()


def _start_tail(config: Path, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "heatgate", "tail", "--config", str(config), "--json", *extra],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_topics_for_gateway_and_fleet() -> None:
    assert topics_for("hg/v1", "gw-1") == ["hg/v1/gw-1/#"]
    assert topics_for("hg/v1", None) == ["hg/v1/+/#"]
    assert mqtt.topic_matches_sub(topics_for("hg/v1", None)[0], "hg/v1/analytics/heat-pump")


def test_tail_shows_a_live_stream_validated_and_deduplicated(plain_broker: Broker, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "heatgate.toml", plain_broker)
    tail = _start_tail(config, "--fleet", "--count", "5", "--duration-s", "30")
    try:
        assert tail.stdout is not None

        async def scenario() -> list[str]:
            buffer: Any = await open_real_buffer(tmp_path)
            try:
                publisher = Publisher(MqttConfig(url=plain_broker.url), GW, buffer, version="t", health=dict)
                task = asyncio.create_task(publisher.run())
                # The retained birth reaches the tail once it has subscribed: then the stream starts.
                assert tail.stdout is not None
                first = await asyncio.to_thread(tail.stdout.readline)
                await buffer.put([fault_record(1), telemetry_record(1), telemetry_record(2), analytics_record(3)])
                publisher.wake()
                while await buffer.count() > 0:
                    await asyncio.sleep(0.02)
                await publisher.stop()
                await task
                return [first]
            finally:
                await buffer.close()

        lines = run_async(scenario())
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert tail.returncode == 0, err
    events = [json.loads(line) for line in lines + out.splitlines()]
    assert all(e["valid"] for e in events), events
    by_topic = {e["topic"]: e for e in events}
    assert by_topic[f"heatgate/v1/{GW}/service/fault"]["records"][0]["body"]["code"] == 101
    assert len(by_topic[f"heatgate/v1/{GW}/telemetry"]["records"]) == 2
    analytics = by_topic["heatgate/v1/analytics/heat-pump"]
    assert "gateway" not in analytics and analytics["stream"] == "analytics"
    states = [e["state"]["state"] for e in events if e["kind"] == "state"]
    assert states[0] == "online" and states[-1] == "offline"


def test_tail_flags_invalid_messages_and_duplicates(plain_broker: Broker, tmp_path: Path) -> None:
    config = _write_config(tmp_path / "heatgate.toml", plain_broker)
    good_buffer = MemoryBuffer()
    record = telemetry_record(5)
    run_async(good_buffer.put([record]))
    from heatgate.agent.publish.packing import pack

    stored = run_async(good_buffer.take(10))
    message = pack(
        stored, prefix="heatgate/v1", gateway_id=GW, max_payload_bytes=65536, sent_at="2025-01-01T00:00:00Z"
    )[0]
    leaky = json.loads(message.payload)
    leaky["gateway"] = "someone-else"
    _raw_publish(plain_broker, [(f"heatgate/v1/{GW}/state", b"not json")], retain=True)
    tail = _start_tail(config, "--count", "4", "--duration-s", "30")
    try:
        # A retained bad state message reaches the tail as soon as it has subscribed.
        assert tail.stdout is not None
        first_line = tail.stdout.readline()
        _raw_publish(
            plain_broker,
            [
                (message.topic, message.payload),
                (message.topic, message.payload),  # a re-send: same record id
                (message.topic, json.dumps(leaky).encode()),
            ],
        )
        out, err = tail.communicate(timeout=30)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.communicate()
    assert tail.returncode == 0, err
    events = [json.loads(line) for line in [first_line, *out.splitlines()]]
    assert len(events) == 4
    probe, first, again, wrong = events[0], events[-3], events[-2], events[-1]
    assert not probe["valid"] and "not JSON" in probe["error"]
    assert first["valid"] and [r["id"] for r in first["records"]] == [record.id] and first["duplicates"] == 0
    assert again["valid"] and again["records"] == [] and again["duplicates"] == 1
    assert not wrong["valid"] and "does not match the topic" in wrong["error"]


def test_tail_reports_a_refused_connection(tmp_path: Path) -> None:
    from heatgate.agent.devtools.localbroker import free_port

    config = tmp_path / "heatgate.toml"
    config.write_text(f'[gateway]\nid = "{GW}"\nregion = "NL-UT"\n\n[mqtt]\nurl = "mqtt://127.0.0.1:{free_port()}"\n')
    tail = _start_tail(config, "--count", "1")
    _out, err = tail.communicate(timeout=30)
    assert tail.returncode == 1
    assert "cannot connect" in err and "Connection refused" in err
