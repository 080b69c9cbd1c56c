"""The backend's picture of a home stays true (issue 21), end to end.

- A fault raised, the agent stopped (cleanly, or kill -9), the device clears, the agent started:
  the clear is published (the agent runs as its own process, the heat pump simulator too).
- The P1 port unplugged for longer than ``[gateway] unavailable_after_s``: a service status
  record ``availability: unavailable``, then ``available``; none for a shorter unplug.
- A full disk with a fault toggling: service records are refused, coalesced per point, and once
  there is room the buffer holds the true latest state of every point with the count of what was
  coalesced (a real buffer on a small tmpfs).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.daemon import Committer
from heatgate.agent.devtools.harness import Gateway, listening, load_sources, spawn_sim, stop_process, wait_until
from heatgate.agent.devtools.localbroker import Broker, free_port
from heatgate.agent.devtools.subscriber import Subscriber
from heatgate.buffer.adapter import open_buffer
from heatgate.drivers.reading import PointKind
from heatgate.drivers.sim.p1 import P1Simulator
from tests.support.buffer import RETENTION_S, Clock
from tests.support.leaks import run_async
from tests.support.privacy import T0, bodies, make_pipeline, reading
from tests.support.tmpfs import tmpfs

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.serial]

F, S = PointKind.FAULT, PointKind.STATUS


def _service(subscriber: Subscriber) -> list[dict[str, Any]]:
    """Every service record body received, de-duplicated by id (delivery is at least once: a
    record sent just before a kill -9 is sent again), in id order (the backend's order)."""
    found: dict[str, dict[str, Any]] = {}
    with subscriber._cond:
        messages = list(subscriber.messages)
    for message in messages:
        try:
            document = json.loads(message.payload)
        except ValueError:
            continue
        if isinstance(document, dict) and document.get("stream") == "service":
            found.update((r["id"], r["body"]) for r in document["records"])
    return [found[record_id] for record_id in sorted(found)]


def _faults(subscriber: Subscriber) -> list[tuple[Any, bool]]:
    return [(b["code"], b.get("active", True)) for b in _service(subscriber) if b["type"] == "fault"]


@pytest.mark.parametrize("how", ["stop", "kill9"])
def test_a_fault_that_clears_while_the_agent_is_stopped_is_cleared_at_start(
    tmp_path: Path, plain_broker: Broker, how: str
) -> None:
    clear_after_s = 20.0
    port = free_port()
    sim = spawn_sim(tmp_path / "sim.log", "heatpump", "--port", str(port), "--fault", "101@0", "--clear-after", "20")
    sim_started = time.monotonic()
    sources = load_sources(heatpump_port=port, modbus_interval_s=0.5)
    gateway = Gateway(tmp_path / "gw", broker_url=plain_broker.url, sources_toml=sources)
    try:
        wait_until(lambda: listening(port), timeout_s=20, what="the heat pump simulator")
        gateway.provision()
        with Subscriber("127.0.0.1", plain_broker.port, ["heatgate/#"]) as subscriber:
            gateway.start()
            wait_until(lambda: (101, True) in _faults(subscriber), timeout_s=30, what="the fault raised")
            if how == "kill9":
                gateway.kill9()
            else:
                assert gateway.stop() == 0
            stopped_at = time.monotonic() - sim_started
            assert stopped_at < clear_after_s, f"the agent took {stopped_at:.0f} s: the fault cleared before its stop"
            assert _faults(subscriber) == [(101, True)]
            time.sleep(max(0.0, clear_after_s + 1.0 - (time.monotonic() - sim_started)))  # the device clears
            gateway.start()
            wait_until(lambda: (101, False) in _faults(subscriber), timeout_s=30, what="the clear")
            time.sleep(2.0)  # a few more polls: nothing else about the fault
            faults = _faults(subscriber)
            assert faults == [(101, True), (101, False)], faults
            assert gateway.stop() == 0
    finally:
        gateway.close()
        stop_process(sim)


def _set_gateway_key(gateway: Gateway, line: str) -> None:
    text = gateway.config_path.read_text()
    gateway.config_path.write_text(re.sub(r"(?m)^\[gateway\]\n", f"[gateway]\n{line}\n", text, count=1))


def test_p1_unplugged_longer_than_the_threshold_is_published_unavailable_then_available(
    tmp_path: Path, plain_broker: Broker
) -> None:
    link = tmp_path / "p1"

    async def main() -> list[dict[str, Any]]:
        sim = P1Simulator(interval_s=0.2, link=link)
        await sim.start()
        gateway = Gateway(tmp_path / "gw", broker_url=plain_broker.url, sources_toml=load_sources(p1_link=link))
        gateway.provision()
        _set_gateway_key(gateway, "unavailable_after_s = 6")

        async def status(pred: Any, what: str) -> dict[str, Any]:
            return await asyncio.to_thread(gateway.wait_status, pred, timeout_s=30, what=what)

        def port_open(s: dict[str, Any]) -> bool:
            return bool(s["sources"]["smartmeter"]["port_state"] == "open")

        with Subscriber("127.0.0.1", plain_broker.port, ["heatgate/#"]) as subscriber:

            def availability() -> list[dict[str, Any]]:
                return [b for b in _service(subscriber) if b.get("point") == "availability"]

            try:
                gateway.start()
                await status(lambda s: s["sources"]["smartmeter"]["telegrams_ok"] > 3, "telegrams")
                # A short unplug (2 s, under the 6 s threshold): nothing reaches the backend.
                sim.unplug()
                await status(lambda s: not port_open(s), "the port lost")
                await asyncio.sleep(2.0)
                sim.plug()
                await status(port_open, "the port back")
                await asyncio.sleep(7.0)  # evaluated at least once more while it runs
                assert availability() == []
                # A long one (14 s): unavailable, then available once it is back.
                sim.unplug()
                await status(lambda s: not port_open(s), "the port lost again")
                await asyncio.to_thread(wait_until, lambda: availability(), timeout_s=25, what="unavailable")
                sim.plug()
                await asyncio.to_thread(
                    wait_until, lambda: len(availability()) >= 2, timeout_s=30, what="available again"
                )
                await asyncio.sleep(1.0)
                assert await asyncio.to_thread(gateway.stop) == 0
                return availability()
            finally:
                await asyncio.to_thread(gateway.close)
                await sim.stop()

    records = run_async(main())
    assert [(b["device"], b["device_type"], b["value"]) for b in records] == [
        ("smartmeter", "p1", "unavailable"),
        ("smartmeter", "p1", "available"),
    ]
    assert records[0]["text"] == "waiting-for-port"


# ---- a full disk with a fault toggling ------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with tmpfs(tmp_path / "small", "1536k") as mount:
        yield mount


def _fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError as exc:
        assert exc.errno == 28
    finally:
        os.close(fd)


def test_a_full_disk_with_a_toggling_fault_keeps_the_latest_state_of_every_point(small_fs: Path) -> None:
    db = small_fs / "b.db"
    filler = small_fs / "filler"
    pipeline = make_pipeline()
    committer = Committer(settle=pipeline.ledger.settle)
    truth: dict[str, Any] = {}
    changes = {"toggling": 0}

    async def main() -> list[dict[str, Any]]:
        clock = Clock(T0 + 3600)
        buffer = await open_buffer(db, bytes(range(32)), cap_bytes=64 << 20, retention_s=RETENTION_S, clock=clock)
        try:

            async def feed(point: str, kind: PointKind, value: Any, ts: float) -> None:
                truth[point] = value
                await committer.commit(buffer, pipeline.process([reading(point, kind, value, ts)]))

            # Before the disk fills: three points with a state, and a backlog of service history.
            await feed("fault_code", F, 12, T0)
            await feed("compressor_fault", F, 3, T0)
            await feed("mode", S, "heating", T0)
            for i in range(40):
                await feed("toggling", F, 7 * (i % 2), T0 + 1 + i)
                changes["toggling"] += 1 if i else 0
            _fill(filler)
            refused_before = (await buffer.stats()).streams["service"].rejected
            # The disk is full: the fault toggles, one point clears, the status changes.
            ts = T0 + 100.0
            for i in range(60):
                ts += 1
                await feed("toggling", F, 7 * (i % 2), ts)
                changes["toggling"] += 1
                if i == 20:
                    await feed("fault_code", F, 0, ts)
                if i == 30:
                    await feed("mode", S, "defrost", ts)
                if i % 10 == 9:
                    await committer.commit(buffer, pipeline.flush(ts))  # the owed ones, refused again
            stats = await buffer.stats()
            assert stats.streams["service"].rejected > refused_before, "the disk never refused a service record"
            assert committer.waiting == []  # the ledger took them back, nothing held twice
            filler.unlink()  # room again (the broker took the backlog, an admin cleaned up)
            await committer.commit(buffer, pipeline.flush(ts + 10))
            assert pipeline.flush(ts + 20) == []  # nothing owed any more
            return bodies(sorted(await buffer.export_all(), key=lambda r: r.id))
        finally:
            await buffer.close()

    stored = run_async(main())
    latest: dict[str, dict[str, Any]] = {}
    for body in stored:
        latest[body["point"]] = body
    assert latest["fault_code"]["code"] == 12 and latest["fault_code"].get("active") is False
    assert latest["compressor_fault"]["code"] == 3 and latest["compressor_fault"].get("active", True)
    assert latest["mode"]["value"] == "defrost"
    toggling = latest["toggling"]
    assert (toggling["code"] if toggling.get("active", True) else 0) == truth["toggling"]
    # The toggles the disk refused arrive as a count on the latest record, none lost uncounted.
    toggles = [b for b in stored if b["point"] == "toggling"]
    coalesced = sum(b.get("coalesced", 0) for b in toggles)
    assert coalesced > 0
    assert len(toggles) + coalesced == changes["toggling"]
