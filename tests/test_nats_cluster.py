"""A node of a 3-node NATS cluster killed while three gateways publish: the backend, a durable
pull consumer on ``$MQTT_msgs`` (where NATS stores each QoS 1 PUBLISH before its PUBACK), gets
every record the gateways deleted from their buffers, exactly once after de-duplication."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import nats
import pytest

from bench.fleet_support.backend import MQTT_MSGS_STREAM, JetStreamBackend
from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.memory_buffer import open_real_buffer, telemetry_record
from heatgate.agent.devtools.nats import NatsCluster
from heatgate.agent.publish.publisher import Publisher
from tests.support.leaks import run_async

pytestmark = pytest.mark.broker

GATEWAYS = 3
RECORDS_PER_PUT = 5
PUT_EVERY_S = 0.05


async def _stream_leader(cluster: NatsCluster) -> str:
    nc = await nats.connect(servers=cluster.urls)
    try:
        info = await nc.jetstream(timeout=5).stream_info(MQTT_MSGS_STREAM)
        assert info.cluster is not None and info.cluster.leader
        return str(info.cluster.leader)
    finally:
        await nc.close()


async def _scenario(cluster: NatsCluster, tmp_path: Path) -> dict[str, Any]:
    backend = JetStreamBackend(cluster.urls, mqtt_urls=[n.mqtt_url for n in cluster.nodes], workers=2, replicas=3)
    await backend.start()
    buffers: list[Any] = []
    publishers: list[Publisher] = []
    tasks: list[asyncio.Task[None]] = []
    expected: set[str] = set()
    try:
        replicas = backend.stream_replicas
        leader = await _stream_leader(cluster)
        victim_index = next(i for i, n in enumerate(cluster.nodes) if n.name == leader)
        for i, node in enumerate(cluster.nodes[:GATEWAYS]):
            buffer: Any = await open_real_buffer(tmp_path / f"gw{i}")
            config = MqttConfig(
                url=node.mqtt_url,
                protocol="3.1.1",
                reconnect_min_s=0.05,
                reconnect_max_s=0.5,
                inflight_max=8,
                max_payload_bytes=1024,
            )
            publisher = Publisher(config, f"gw-cluster-{i}", buffer, version="t", health=dict)
            buffers.append(buffer)
            publishers.append(publisher)
            tasks.append(asyncio.create_task(publisher.run()))

        async def feed(seconds: float) -> None:
            for _ in range(int(seconds / PUT_EVERY_S)):
                for buffer, publisher in zip(buffers, publishers, strict=True):
                    records = [telemetry_record(len(expected) + k) for k in range(RECORDS_PER_PUT)]
                    expected.update(r.id for r in records)
                    await buffer.put(records)
                    publisher.wake()
                await asyncio.sleep(PUT_EVERY_S)

        await feed(2.0)
        victim = cluster.nodes[victim_index]
        published_before_kill = sum(p.status()["published"] for p in publishers)
        await asyncio.to_thread(victim.kill)  # the leader of $MQTT_msgs: stores elsewhere stall too
        await feed(1.5)
        await asyncio.to_thread(victim.start, 60.0)
        await feed(1.0)

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20.0
        queued = [await b.count() for b in buffers]
        while any(queued) and loop.time() < deadline:
            await asyncio.sleep(0.1)
            queued = [await b.count() for b in buffers]
        missing = await backend.wait_for(expected, timeout_s=15.0)
        statuses = [p.status() for p in publishers]
        for publisher in publishers:
            await publisher.stop()
        await asyncio.gather(*tasks)
        return {
            "replicas": replicas,
            "queued": queued,
            "missing": missing,
            "ids": set(backend.stats.ids),
            "expected": expected,
            "records": backend.stats.records,
            "duplicates": backend.stats.duplicates,
            "invalid": backend.stats.invalid,
            "statuses": statuses,
            "victim": victim_index,
            "published_before_kill": published_before_kill,
        }
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for buffer in buffers:
            await buffer.close()
        await backend.stop()


def test_killing_the_stream_leader_loses_no_record_the_gateways_deleted(tmp_path: Path) -> None:
    cluster = NatsCluster(tmp_path / "nats", size=3)
    cluster.start()
    try:
        result = run_async(_scenario(cluster, tmp_path))
    finally:
        cluster.stop()
    assert result["replicas"] == 3
    assert result["published_before_kill"] > 0
    # Every buffer drained: every record was PUBACKed by NATS and deleted by its gateway ...
    assert result["queued"] == [0, 0, 0]
    # ... and every one of them reached the backend, nothing else did, each counted once.
    assert result["missing"] == set()
    assert result["ids"] == result["expected"]
    assert result["records"] == len(result["expected"]) + result["duplicates"]
    assert result["invalid"] == 0
    # The victim's gateway lost its connection and came back ("reconnects" counts the first connect too).
    assert result["statuses"][result["victim"]]["reconnects"] >= 2
    assert all(s["refused"] == 0 for s in result["statuses"])
