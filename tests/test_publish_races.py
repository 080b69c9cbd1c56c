"""Connection races against a real Mosquitto: a connection that drops while the drain waits, and
a CONNACK that never comes. Every future resolves, every record taken is released or acked."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.memory_buffer import MemoryBuffer, telemetry_record
from heatgate.agent.publish.client import MqttClient
from heatgate.agent.publish.errors import ConnectError
from heatgate.agent.publish.publisher import Publisher
from heatgate.buffer.api import StoredRecord
from tests.support.leaks import run_async

pytestmark = pytest.mark.broker
GW = "gw-race-0001"
DEADLINE_S = 20.0


class DropDuringTake(MemoryBuffer):
    """The broker goes away while the publisher waits for ``take()`` number ``drop_on``: the
    records come back only once the publisher's connection has seen the close."""

    def __init__(self, broker: Broker, drop_on: int) -> None:
        super().__init__()
        self.broker = broker
        self.drop_on = drop_on
        self.takes = 0
        self.publisher: Publisher | None = None
        self.dropped_with: list[str] = []

    async def take(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> list[StoredRecord]:
        self.takes += 1
        if self.takes == self.drop_on:
            await asyncio.to_thread(self.broker.stop)
            assert self.publisher is not None
            for _ in range(int(DEADLINE_S / 0.01)):
                client = self.publisher._client  # the connection this drain round publishes on
                if client is None or not client.connected:
                    break
                await asyncio.sleep(0.01)
            records = await super().take(limit, exclude_streams=exclude_streams)
            self.dropped_with = [r.id for r in records]
            return records
        return await super().take(limit, exclude_streams=exclude_streams)


def test_connection_lost_while_the_drain_waits_is_a_reconnect_not_a_crash(
    broker_factory: Any,
) -> None:
    broker = broker_factory("plain")
    total = 40
    buffer = DropDuringTake(broker, drop_on=1)  # right after the birth
    events: list[str] = []

    async def scenario() -> None:
        await buffer.put([telemetry_record(i) for i in range(total)])
        config = MqttConfig(url=broker.url, reconnect_min_s=0.05, reconnect_max_s=0.2, max_payload_bytes=1024)
        publisher = Publisher(
            config, GW, buffer, version="t", health=dict, on_connectivity=lambda e, _t, _r: events.append(e)
        )
        buffer.publisher = publisher
        task = asyncio.create_task(publisher.run())
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + DEADLINE_S
            while not buffer.dropped_with:
                assert not task.done(), task.exception()
                assert loop.time() < deadline, "the drain never took records a second time"
                await asyncio.sleep(0.01)
            await asyncio.to_thread(broker.start)
            while buffer.records:
                # Before the fix the run task died here with NotConnected, records in flight.
                assert not task.done(), task.exception()
                assert loop.time() < deadline, f"{len(buffer.records)} record(s) never delivered"
                await asyncio.sleep(0.02)
        finally:
            await publisher.stop()
            await task

    run_async(scenario())
    assert buffer.dropped_with, "the broker was never dropped during a take"
    assert set(buffer.dropped_with) <= set(buffer.released)  # taken while down: given back...
    assert set(buffer.dropped_with) <= set(buffer.acked)  # ...and delivered later, same ids
    assert not buffer.inflight and len(set(buffer.acked)) == total
    assert "disconnected" in events and events.count("connected") >= 2


@contextmanager
def frozen(broker: Broker) -> Iterator[None]:
    """The broker's process stopped: the kernel still accepts TCP, nobody answers CONNECT."""
    assert broker.process is not None
    os.kill(broker.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.process.pid, signal.SIGCONT)


def _collect_loop_errors(found: list[str]) -> None:
    asyncio.get_running_loop().set_exception_handler(lambda _loop, context: found.append(context["message"]))


def test_connack_timeout_leaves_no_future_behind(plain_broker: Broker) -> None:
    """The connect storm: a client gives up on CONNACK; paho reporting the closed connection
    afterwards must not set an exception nobody retrieves."""
    found: list[str] = []

    async def attempt() -> str:
        client = MqttClient(MqttConfig(url=plain_broker.url), connect_timeout_s=0.3)
        try:
            await client.connect()
        except ConnectError as exc:
            reason = exc.reason
        else:
            reason = "connected"
        # paho's reader or keepalive noticing the dead socket later, as it does when the close
        # races the timeout in a connect storm: on_disconnect reaches the abandoned attempt.
        client._client.loop_read()
        connected = client.connected
        await client.disconnect()
        return reason if not connected else "connected after all"

    async def scenario() -> list[str]:
        _collect_loop_errors(found)
        reasons = list(await asyncio.gather(*(attempt() for _ in range(5))))
        gc.collect()  # an abandoned future with an exception complains when it is collected
        await asyncio.sleep(0)
        return reasons

    with frozen(plain_broker):
        reasons = run_async(scenario())
    assert reasons == ["no CONNACK within 0.3 s"] * 5
    assert found == [], found


def test_connect_after_a_frozen_broker_thaws_still_works(plain_broker: Broker) -> None:
    """A timed-out attempt leaves nothing that disturbs the next one (fresh client, same id)."""

    async def scenario() -> tuple[str, bool]:
        config = MqttConfig(url=plain_broker.url, client_id="gw-race-thaw")
        with frozen(plain_broker):
            first = MqttClient(config, connect_timeout_s=0.2)
            with pytest.raises(ConnectError) as raised:
                await first.connect()
            await first.disconnect()
        second = MqttClient(config, connect_timeout_s=5.0)
        await second.connect()
        try:
            await asyncio.wait_for(second.publish("race/thaw", b"x", qos=1), 5.0)
            return raised.value.reason, second.connected
        finally:
            await second.disconnect()

    reason, connected = run_async(scenario())
    assert reason.startswith("no CONNACK") and connected
