"""A broker that keeps the connection alive (answers pings) but stops acknowledging: the
publisher drops the connection after ``mqtt.puback_timeout_s``, keeps every record, and tries again."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.memory_buffer import open_real_buffer, telemetry_record
from heatgate.agent.publish.errors import ConnectionLost, PublishError
from heatgate.agent.publish.publisher import Publisher
from tests.support.black_hole import BlackHoleBroker
from tests.support.leaks import run_async


def test_no_puback_while_pings_are_answered_is_a_reconnect(tmp_path: Path) -> None:
    events: list[tuple[str, str | None]] = []

    async def scenario() -> tuple[int, int, Any]:
        broker = BlackHoleBroker(answer_pings=True, ack_first=1)  # the birth message only
        await broker.start()
        buffer: Any = await open_real_buffer(tmp_path)
        try:
            await buffer.put([telemetry_record(i) for i in range(50)])
            config = MqttConfig(
                url=f"mqtt://127.0.0.1:{broker.port}",
                keepalive_s=5,
                puback_timeout_s=0.5,
                reconnect_min_s=0.05,
                reconnect_max_s=0.2,
            )
            publisher = Publisher(
                config,
                "gw-stall-0001",
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, r: events.append((e, r)),
            )
            task = asyncio.create_task(publisher.run())
            while broker.connections < 3:
                await asyncio.sleep(0.02)
            status = publisher.status()
            await publisher.stop()
            await task
            return await buffer.count(), broker.publishes, status
        finally:
            await buffer.close()
            await broker.close()

    count, publishes, status = run_async(scenario())
    assert count == 50  # nothing deleted without a PUBACK
    assert publishes > 3  # the records were sent, again on each connection
    reasons = [r for e, r in events if e == "disconnected"]
    assert reasons and all("no PUBACK" in (r or "") for r in reasons[:2]), events
    assert status["published"] == 0


@pytest.mark.parametrize("what", ["birth", "command response"])
def test_the_birth_and_command_responses_are_bounded_by_the_same_timeout(tmp_path: Path, what: str) -> None:
    """Not only drained records: any message without PUBACK for ``puback_timeout_s`` ends the
    connection (a command response used to wait for ever). The birth has at most 10 s."""
    events: list[tuple[str, str | None]] = []

    async def scenario() -> tuple[BaseException | None, int]:
        broker = BlackHoleBroker(answer_pings=True, ack_first=0 if what == "birth" else 1)
        await broker.start()
        buffer: Any = await open_real_buffer(tmp_path)
        raised: BaseException | None = None
        try:
            config = MqttConfig(
                url=f"mqtt://127.0.0.1:{broker.port}",
                keepalive_s=5,
                puback_timeout_s=0.5,
                reconnect_min_s=0.05,
                reconnect_max_s=0.2,
            )
            publisher = Publisher(
                config,
                "gw-stall-0001",
                buffer,
                version="t",
                health=dict,
                on_connectivity=lambda e, _t, r: events.append((e, r)),
            )
            task = asyncio.create_task(publisher.run())
            async with asyncio.timeout(5):
                if what == "command response":
                    while not publisher.status()["connected"]:
                        await asyncio.sleep(0.01)
                    await asyncio.sleep(0.05)  # the birth's PUBACK
                    try:
                        await publisher.publish_raw("heatgate/v1/gw-stall-0001/cmd/response", b"{}")
                    except PublishError as exc:
                        raised = exc
                while broker.connections < 2:
                    await asyncio.sleep(0.02)
            await publisher.stop()
            await task
            return raised, broker.connections
        finally:
            await buffer.close()
            await broker.close()

    raised, connections = run_async(scenario())
    assert connections >= 2
    reasons = [r for e, r in events if e == "disconnected"]
    assert reasons and re.search(r"no PUBACK .*within 0\.5 s", reasons[0] or ""), events
    if what == "command response":
        assert isinstance(raised, ConnectionLost) and "no PUBACK" in raised.reason
