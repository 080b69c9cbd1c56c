"""The zwave-js source, client and inclusion flows against Z-Wave JS's own mock controller and
mock nodes, through a real @zwave-js/server on loopback (tests/support/zwavejs.py)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from pathlib import Path

import pytest

from heatgate.agent.provision import Answers, provision
from heatgate.drivers.reading import PointKind, Reading
from heatgate.drivers.zwavejs.client import ZwaveJsClient
from heatgate.drivers.zwavejs.inclusion import (
    EventInbox,
    include,
    provision_smartstart,
    provisioning_entries,
    unprovision_smartstart,
)
from heatgate.drivers.zwavejs.settings import ZwaveJsNode, ZwaveJsSource
from heatgate.drivers.zwavejs.source import ZwaveJsRunner
from tests.support.privacy import bodies, make_pipeline
from tests.support.zwavejs import MockNetwork, node_missing_reason, smartstart_qr

_missing = node_missing_reason()
pytestmark = [pytest.mark.slow, pytest.mark.skipif(_missing is not None, reason=_missing or "")]

HOME_ID = 0x7E5A11CE
SENSOR, METER, LEAK, DUAL = 2, 3, 4, 5
NODES = [
    {
        "id": SENSOR,
        "capabilities": {
            "securityClasses": ["S2_Authenticated"],
            "commandClasses": {
                "Security 2": {},
                "Multilevel Sensor": {"version": 11, "sensors": {"1": {"supportedScales": [0]}}},
                "Battery": {},
            },
        },
    },
    {
        "id": METER,
        "capabilities": {
            "securityClasses": ["S2_Unauthenticated"],
            "commandClasses": {"Security 2": {}, "Meter": {"version": 3}},
        },
    },
    {
        "id": LEAK,
        "capabilities": {
            "commandClasses": {"Notification": {"version": 8, "notificationTypesAndEvents": {"5": [2]}}},
        },
    },
    {
        "id": DUAL,
        "capabilities": {
            "commandClasses": {"Multi Channel": {"version": 4}},
            "endpoints": [
                {"commandClasses": {"Binary Switch": {}}},
                {"commandClasses": {"Binary Switch": {}}},
            ],
        },
    },
]


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MockNetwork]:
    net = MockNetwork(tmp_path_factory.mktemp("zwavejs"), NODES, home_id=HOME_ID)
    try:
        net.start()
        asyncio.run(_wait_all_ready(net.url, {SENSOR, METER, LEAK, DUAL}))
        yield net
    finally:
        net.stop()


async def _wait_all_ready(url: str, node_ids: set[int], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        async with ZwaveJsClient.connect(url) as client:
            state = await client.start_listening()
        if node_ids <= {node.nodeId for node in state.nodes if node.ready}:
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"nodes not ready: {[(n.nodeId, n.interviewStage) for n in state.nodes]}")
        await asyncio.sleep(0.5)


def _config(url: str) -> ZwaveJsSource:
    return ZwaveJsSource(
        name="zw",
        url=url,
        nodes=[
            ZwaveJsNode(node_id=SENSOR, name="living-room", device_type="room-sensor"),
            ZwaveJsNode(node_id=METER, name="heat-pump-meter", device_type="energy-meter"),
            ZwaveJsNode(node_id=LEAK, name="boiler-leak", device_type="leak-sensor"),
        ],
        reconnect_min_s=0.2,
        reconnect_max_s=1.0,
    )


class Collected:
    def __init__(self) -> None:
        self.readings: list[Reading] = []
        self._changed = asyncio.Event()

    async def sink(self, readings: Sequence[Reading]) -> None:
        self.readings.extend(readings)
        self._changed.set()

    async def wait_for(self, match: Callable[[Reading], bool], timeout_s: float = 10.0) -> Reading:
        deadline = asyncio.get_running_loop().time() + timeout_s
        seen = 0
        while True:
            for reading in self.readings[seen:]:
                if match(reading):
                    return reading
            seen = len(self.readings)
            self._changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                got = [(r.device, r.point, r.value) for r in self.readings]
                raise AssertionError(f"no matching reading; got {got}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), remaining)


@contextlib.asynccontextmanager
async def running(runner: ZwaveJsRunner) -> AsyncIterator[Collected]:
    collected = Collected()
    task = asyncio.create_task(runner.run(collected.sink), name="zwavejs-runner")
    try:
        yield collected
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.05)


def test_secure_sensor_and_meter_updates_arrive_as_named_readings(network: MockNetwork) -> None:
    async def scenario() -> None:
        runner = ZwaveJsRunner(_config(network.url))
        async with running(runner) as got:
            home = await got.wait_for(lambda r: r.point == "home_id")
            assert home.kind is PointKind.IDENTIFIER and home.value == f"{HOME_ID:08x}"
            await _until(lambda: runner.state == "connected")
            network.inject(op="sensor", node=SENSOR, type=1, scale=0, value=21.7)
            network.inject(op="meter", node=METER, type=1, scale=0, value=1234.5)
            network.inject(op="battery", node=SENSOR, level=63)
            temp = await got.wait_for(lambda r: r.point == "air_temperature_c" and r.value == 21.7)
            assert (temp.device, temp.device_type, temp.kind, temp.unit) == (
                "living-room",
                "room-sensor",
                PointKind.MEASUREMENT,
                "°C",
            )
            energy = await got.wait_for(lambda r: r.point == "energy_kwh" and r.value == 1234.5)
            assert (energy.device, energy.kind, energy.unit) == ("heat-pump-meter", PointKind.COUNTER, "kWh")
            battery = await got.wait_for(lambda r: r.point == "battery_pct" and r.value == 63)
            assert battery.device == "living-room"
            health = runner.health()
            # Both reports came S2-encrypted: the nodes were included securely.
            assert health["nodes"]["living-room"]["security"].startswith("S2_")
            assert health["nodes"]["heat-pump-meter"]["security"].startswith("S2_")
            assert health["nodes"]["boiler-leak"]["security"] == "none"
            assert health["nodes"]["living-room"]["status"] == "alive"
            assert health["nodes"]["node-5"]["ready"] is True

    asyncio.run(scenario())


def test_water_leak_becomes_a_service_fault_without_the_home_id(network: MockNetwork) -> None:
    async def scenario() -> list[Reading]:
        runner = ZwaveJsRunner(_config(network.url))
        async with running(runner) as got:
            await got.wait_for(lambda r: r.point == "home_id")
            network.inject(op="notification", node=LEAK, type=5, event=2)
            await got.wait_for(lambda r: r.point == "water_alarm" and r.value == 2)
            return got.readings

    readings = asyncio.run(scenario())
    leak = [r for r in readings if r.point == "water_alarm" and r.value == 2][-1]
    assert (leak.device, leak.kind, leak.text) == ("boiler-leak", PointKind.FAULT, "Water leak detected")
    pipeline = make_pipeline()
    records = pipeline.process(readings) + pipeline.flush(force=True)
    faults = [b for b in bodies(records, "service") if b.get("point") == "water_alarm" and b.get("code") == 2]
    assert faults and faults[0]["device"] == "boiler-leak" and faults[0]["code"] == 2
    home_hex = f"{HOME_ID:08x}"
    for record in records:
        assert home_hex not in record.payload.decode(errors="replace").lower()
        assert str(HOME_ID) not in record.payload.decode(errors="replace")


def test_multichannel_endpoints_get_their_own_points(network: MockNetwork) -> None:
    async def scenario() -> None:
        runner = ZwaveJsRunner(_config(network.url))
        async with running(runner) as got:
            await _until(lambda: runner.state == "connected")
            network.inject(op="binary_switch", node=DUAL, endpoint=2, value=True)
            switch = await got.wait_for(lambda r: r.point == "ep2_switch" and r.value == 1)
            assert (switch.device, switch.kind, switch.text) == ("node-5", PointKind.STATUS, "on")

    asyncio.run(scenario())


def test_s2_node_is_included_with_its_dsk(network: MockNetwork) -> None:
    new_node = 9
    network.inject(
        op="include",
        node=new_node,
        capabilities={
            "securityClasses": ["S2_Authenticated"],
            "commandClasses": {"Security 2": {}, "Multilevel Sensor": {"version": 11}},
        },
    )
    dsk = next(line.split()[2] for line in network.mock_output().splitlines() if line.startswith(f"dsk {new_node} "))

    async def scenario() -> tuple[int, str | None, bool]:
        inbox = EventInbox()
        async with ZwaveJsClient.connect(network.url, on_event=inbox) as client:
            await client.start_listening()
            outcome = await include(client, inbox, dsk=dsk, timeout_s=30)
            return outcome.node_id, outcome.security_class, outcome.low_security

    node_id, security, low = asyncio.run(scenario())
    assert node_id == new_node
    assert security == "S2_Authenticated"
    assert low is False


def test_smartstart_entry_is_added_and_listed(network: MockNetwork) -> None:
    dsk = "11111-22222-33333-44444-55555-12345-23456-34567"

    async def scenario() -> list[dict[str, object]]:
        async with ZwaveJsClient.connect(network.url) as client:
            await provision_smartstart(client, smartstart_qr(dsk))
            listed = await provisioning_entries(client)
            # Leave the network as it was: a pending SmartStart entry keeps the mock controller
            # in SmartStart listening, where it takes no classic inclusion.
            await unprovision_smartstart(client, dsk)
            assert await provisioning_entries(client) == []
            return listed

    entries = asyncio.run(scenario())
    assert [entry["dsk"] for entry in entries] == [dsk]
    assert sorted(entries[0]["securityClasses"]) == [0, 1]  # type: ignore[call-overload]


@pytest.fixture
def small_network(tmp_path: Path) -> Iterator[MockNetwork]:
    """A network of its own (the sensor only), for the test that stops and starts the server."""
    net = MockNetwork(tmp_path / "zwavejs", [NODES[0]], home_id=HOME_ID)
    try:
        net.start()
        asyncio.run(_wait_all_ready(net.url, {SENSOR}))
        yield net
    finally:
        net.stop()


def test_server_going_away_and_coming_back(small_network: MockNetwork) -> None:
    network = small_network

    async def scenario() -> None:
        runner = ZwaveJsRunner(_config(network.url))
        async with running(runner) as got:
            await _until(lambda: runner.state == "connected")
            await asyncio.to_thread(network.stop_server)
            await _until(lambda: runner.state == "disconnected")
            assert runner.health()["disconnects"] == 1
            assert runner.health()["nodes"]["living-room"]["ready"] is False
            await asyncio.to_thread(network.start_server)
            await _until(lambda: runner.connects == 2, timeout_s=20)
            network.inject(op="sensor", node=SENSOR, type=1, scale=0, value=19.25)
            await got.wait_for(lambda r: r.point == "air_temperature_c" and r.value == 19.25, timeout_s=15)
            assert runner.health()["state"] == "connected"

    asyncio.run(scenario())


def _heatgate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heatgate", *args], capture_output=True, text=True, check=False, timeout=60
    )


def test_cli_lists_nodes_and_audits_a_smartstart_entry(network: MockNetwork, tmp_path: Path) -> None:
    config = tmp_path / "heatgate.toml"
    source = f'''
[[sources]]
type = "zwave-js"
name = "zw"
url = "{network.url}"
nodes = [{{ node_id = {SENSOR}, name = "living-room", device_type = "room-sensor" }}]
'''
    provision(
        Answers(
            gateway_id="gw-zwave-0001",
            region="3511 AB",
            state_dir=tmp_path / "state",
            config_path=config,
            broker_url="mqtt://127.0.0.1:1883",
            sources_toml=source,
        )
    )
    listed = _heatgate("zwave", "nodes", "--json", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    rows = {row["node_id"]: row for row in json.loads(listed.stdout)}
    assert rows[SENSOR]["name"] == "living-room" and rows[SENSOR]["security"].startswith("S2_")
    assert rows[LEAK]["security"] == "none" and rows[LEAK]["status"] == "alive"

    dsk = "22222-33333-44444-55555-12345-23456-34567-45678"
    added = _heatgate("zwave", "include", "--qr", smartstart_qr(dsk), "--config", str(config))
    assert added.returncode == 0, added.stderr
    bad = _heatgate("zwave", "include", "--s2-dsk", "1234", "--config", str(config))
    assert bad.returncode == 2 and "--s2-dsk" in bad.stderr

    async def cleanup() -> None:
        async with ZwaveJsClient.connect(network.url) as client:
            await unprovision_smartstart(client, dsk)

    asyncio.run(cleanup())
    exported = _heatgate("privacy", "export", "--config", str(config))
    assert exported.returncode == 0, exported.stderr
    audits = [r["body"] for r in json.loads(exported.stdout)["records"] if r["stream"] == "security"]
    provisioned = [a for a in audits if a.get("event") == "zwave.provision"]
    assert provisioned and provisioned[0]["outcome"] == "done" and provisioned[0]["actor"] == "local-cli"
    # The DSK identifies the device: it is never written to the audit log.
    assert dsk not in exported.stdout and dsk.replace("-", "") not in exported.stdout


def test_no_node_js_reason_is_a_sentence(tmp_path: Path) -> None:
    reason = node_missing_reason()
    assert reason is None or reason.endswith(")") or "Node" in reason
