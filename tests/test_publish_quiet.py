"""The PUBACK timeout measures the age of the oldest unacknowledged message, nothing else: a quiet
spell longer than the timeout is no reason to drop a connection (issue 14: it made every reconnect
after a quiet spell fail again, a storm). And however a connection ends, a stopped publisher leaves
the retained state ``offline``. Against a real Mosquitto, connections counted at the broker."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.memory_buffer import open_real_buffer, telemetry_record
from heatgate.agent.devtools.subscriber import Received, Subscriber
from heatgate.agent.publish.publisher import Publisher
from tests.support.leaks import run_async

pytestmark = pytest.mark.broker
GW = "gw-quiet-0001"
STATE = f"heatgate/v1/{GW}/state"
TELEMETRY = f"heatgate/v1/{GW}/telemetry"


def _config(broker: Broker, **overrides: Any) -> MqttConfig:
    options: dict[str, Any] = {"url": broker.url, "reconnect_min_s": 0.05, "reconnect_max_s": 0.3}
    options.update(overrides)
    return MqttConfig(**options)


def _states(messages: list[Received]) -> list[str]:
    return [json.loads(m.payload)["state"] for m in messages if m.topic == STATE]


def _broker_connections(broker: Broker) -> int:
    """CONNECTs of the gateway's client id, from Mosquitto's own log."""
    return broker.log_path.read_text().count(f" as heatgate-{GW} ")


async def _delivered(buffer: Any, timeout_s: float = 10.0) -> None:
    async with asyncio.timeout(timeout_s):
        while await buffer.count():
            await asyncio.sleep(0.02)


@pytest.mark.parametrize("protocol", ["5", "3.1.1"])
def test_a_quiet_spell_longer_than_the_timeout_keeps_the_one_connection(
    broker_factory: Callable[..., Broker], tmp_path: Path, protocol: str
) -> None:
    broker = broker_factory("plain")
    sub = Subscriber("127.0.0.1", broker.port, [STATE, TELEMETRY]).start()
    events: list[tuple[str, str | None]] = []
    timeout_s = 1.0

    async def scenario() -> dict[str, Any]:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            publisher = Publisher(
                _config(broker, puback_timeout_s=timeout_s, protocol=protocol),
                GW,
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, r: events.append((e, r)),
            )
            task = asyncio.create_task(publisher.run())
            await buffer.put([telemetry_record(0)])
            publisher.wake()
            await _delivered(buffer)
            for _ in range(2):
                await asyncio.sleep(timeout_s * 2.5)  # quiet, much longer than the timeout
                await buffer.put([telemetry_record(1)])
                publisher.wake()
                await _delivered(buffer)
            await asyncio.sleep(timeout_s * 2.5)  # a command response after a quiet spell too
            await publisher.publish_raw(f"heatgate/v1/{GW}/cmd/response", b"{}")
            await asyncio.sleep(timeout_s * 1.5)  # a wrongful drop of that connection would show by now
            status = publisher.status()
            await publisher.stop()
            await task
            return status
        finally:
            await buffer.close()

    try:
        status = run_async(scenario())
        received = sub.wait_for(lambda ms: sum(m.topic == TELEMETRY for m in ms) >= 3 and "offline" in _states(ms))
    finally:
        sub.stop()
    assert events == [("connected", None)]
    assert status["reconnects"] == 1 and status["connected"] and status["published"] == 3
    assert _states(received) == ["online", "offline"]  # one birth, then the clean stop
    assert sum(m.topic == TELEMETRY for m in received) == 3  # nothing sent twice
    assert _broker_connections(broker) == 1
    assert status["oldest_unacked_age_s"] is None  # nothing in flight


@pytest.mark.slow
def test_at_the_default_timeout_a_quiet_spell_is_not_a_dead_connection(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    """The shipped default (30 s) once, with a quiet spell just past it: the issue's case."""
    broker = broker_factory("plain")
    events: list[str] = []
    assert MqttConfig().puback_timeout_s == 30.0

    async def scenario() -> dict[str, Any]:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            publisher = Publisher(
                _config(broker),
                GW,
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, _r: events.append(e),
            )
            task = asyncio.create_task(publisher.run())
            await buffer.put([telemetry_record(0)])
            publisher.wake()
            await _delivered(buffer)
            await asyncio.sleep(31)
            await buffer.put([telemetry_record(1)])
            publisher.wake()
            await _delivered(buffer)
            await asyncio.sleep(1)
            status = publisher.status()
            await publisher.stop()
            await task
            return status
        finally:
            await buffer.close()

    status = run_async(scenario())
    assert events == ["connected"]
    assert status["published"] == 2
    assert _broker_connections(broker) == 1


def test_stopped_in_the_reconnect_loop_leaves_the_retained_state_offline(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    """The broker freezes (SIGSTOP): the record gets no PUBACK, the publisher drops the connection
    after the timeout and waits to reconnect; a stop then finds no connection. The dropped
    connection must end without DISCONNECT, so that the broker, once it runs again, publishes
    the ``offline`` will; a normal DISCONNECT (as before) left ``online`` retained for ever."""
    broker = broker_factory("plain")
    assert broker.process is not None
    pid = broker.process.pid
    sub = Subscriber("127.0.0.1", broker.port, [STATE]).start()
    events: list[tuple[str, str | None]] = []

    async def scenario() -> None:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            # A long backoff: after the drop the publisher sits in the reconnect loop.
            publisher = Publisher(
                _config(broker, puback_timeout_s=0.5, reconnect_min_s=60, reconnect_max_s=60),
                GW,
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, r: events.append((e, r)),
            )
            task = asyncio.create_task(publisher.run())
            await asyncio.to_thread(sub.wait_for, lambda ms: "online" in _states(ms))
            os.kill(pid, signal.SIGSTOP)
            try:
                await buffer.put([telemetry_record(0)])
                publisher.wake()
                async with asyncio.timeout(10):
                    while not any(e == "disconnected" for e, _r in events):
                        await asyncio.sleep(0.02)
                async with asyncio.timeout(2):  # no connection: nothing to wait for
                    await publisher.stop()
                    await task
            finally:
                os.kill(pid, signal.SIGCONT)
            assert await buffer.count() == 1  # kept: it goes again on the next start
        finally:
            await buffer.close()

    try:
        run_async(scenario())
        received = sub.wait_for(lambda ms: _states(ms)[-1:] == ["offline"], timeout_s=10)
    finally:
        sub.stop()
    assert [e for e, _r in events] == ["connected", "disconnected"]
    assert "no PUBACK within 0.5 s" in (events[1][1] or "")
    assert _states(received) == ["online", "offline"]
    with Subscriber("127.0.0.1", broker.port, [STATE]) as fresh:  # what a backend finds later
        retained = fresh.wait_for(lambda ms: bool(ms))
    assert retained[0].retain and _states(retained) == ["offline"]


def test_a_clean_stop_says_offline_and_keeps_nothing_in_flight(
    broker_factory: Callable[..., Broker], tmp_path: Path
) -> None:
    broker = broker_factory("plain")

    async def scenario() -> tuple[int, bool]:
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put([telemetry_record(i) for i in range(200)])
            publisher = Publisher(
                _config(broker, max_payload_bytes=1024, inflight_max=2), GW, buffer, version="t", health=dict
            )
            task = asyncio.create_task(publisher.run())
            async with asyncio.timeout(10):
                while not publisher.status()["published"]:
                    await asyncio.sleep(0.005)
            await publisher.stop()  # mid-drain
            done = task.done()
            await task
            return await buffer.count(), done
        finally:
            await buffer.close()

    count, done = run_async(scenario())
    assert done, "stop() returns once run() has ended"
    assert 0 < count < 200
    with Subscriber("127.0.0.1", broker.port, [STATE]) as fresh:
        retained = fresh.wait_for(lambda ms: bool(ms))
    assert _states(retained) == ["offline"]
