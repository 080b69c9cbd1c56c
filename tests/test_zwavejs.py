"""The zwave-js source, client and inclusion flows against Z-Wave JS's own mock controller and
mock nodes, through a real @zwave-js/server on loopback (heatgate.agent.devtools.zwavejs_mock)."""

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

from heatgate.agent.devtools.harness import Gateway, published_records, wait_until
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.subscriber import Subscriber
from heatgate.agent.devtools.zwavejs_mock import MockNetwork, node_missing_reason, smartstart_qr
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

pytestmark = [pytest.mark.slow]


@pytest.fixture(autouse=True)
def _node_is_there() -> None:
    """Node >= 20 and the locked server are installed by `make test`: without them this fails, never skips."""
    missing = node_missing_reason()
    if missing is not None:
        pytest.fail(f"{missing} (make zwave-js installs the locked server; it needs Node >= 20)")


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


# ---- the home id and the DSKs never leave the gateway (issue 18's canaries) ----------------------

CANARY_HOME_ID = 0xC4A2B17D
"""A home id no other test uses, so that every form of it is distinctive."""
CANARY_QR_DSK = "50123-40987-31234-62345-11223-44556-27788-09911"
CANARY_WRONG_DSK = "61234-51098-42345-13456-24567-35678-46789-57890"


def home_id_forms(home_id: int) -> tuple[list[bytes], list[bytes]]:
    """(text forms, searched case-insensitively; binary forms, searched as they are)."""
    hexed = f"{home_id:08x}"
    pairs = [hexed[i : i + 2] for i in range(0, 8, 2)]
    text = [hexed, str(home_id), ":".join(pairs), "-".join(pairs), " ".join(pairs)]
    raw = home_id.to_bytes(4, "big")
    return [t.encode() for t in text], [raw, raw[::-1]]


def dsk_forms(dsk: str) -> tuple[list[bytes], list[bytes]]:
    """A DSK as on the label (dashed), in a QR code (40 digits), as zwave-js shows it (without
    the PIN), and its 16 key bytes (hex, raw). The PIN alone (5 digits) is too short to search."""
    blocks = [int(b) for b in dsk.split("-")]
    key = b"".join(b.to_bytes(2, "big") for b in blocks)
    text = [dsk, dsk.replace("-", ""), dsk.split("-", 1)[1], key.hex()]
    return [t.encode() for t in text], [key]


def _leaks(haystacks: dict[str, bytes], forms: tuple[list[bytes], list[bytes]]) -> list[str]:
    text, raw = forms
    found = []
    for where, data in haystacks.items():
        lowered = data.lower()
        found += [f"{form!r} in {where}" for form in text if form.lower() in lowered]
        found += [f"{form!r} in {where}" for form in raw if form in data]
    return found


def test_canary_forms_are_found_where_they_are() -> None:
    """The search is sharp: each form planted in a haystack is found, and only there."""
    home_text, home_raw = home_id_forms(CANARY_HOME_ID)
    assert home_text[:2] == [b"c4a2b17d", b"3298996605"] and home_raw[0] == bytes.fromhex("c4a2b17d")
    dsk_text, dsk_raw = dsk_forms(CANARY_QR_DSK)
    assert b"5012340987312346234511223445562778809911" in dsk_text
    assert dsk_raw[0].hex() == dsk_text[3].decode() and len(dsk_raw[0]) == 16
    for form in [*(t.upper() for t in home_text), *home_raw]:
        leaks = _leaks({"clean": b"nothing here", "planted": b"x" + form + b"y"}, home_id_forms(CANARY_HOME_ID))
        assert leaks != [] and all("planted" in leak for leak in leaks), form
    for form in [*dsk_text, *dsk_raw]:
        assert _leaks({"planted": b"{" + form + b"}"}, dsk_forms(CANARY_QR_DSK)) != []


def _records(subscriber: Subscriber) -> list[tuple[str, dict[str, object]]]:
    """(stream, body) of every record received."""
    with subscriber._cond:
        payloads = [m.payload for m in subscriber.messages]
    return _records_of(payloads)


def _records_of(payloads: Sequence[bytes]) -> list[tuple[str, dict[str, object]]]:
    return [(stream, record["body"]) for stream, record in published_records(payloads) if "body" in record]


@pytest.mark.broker
def test_home_id_and_dsks_are_never_published_stored_or_logged(tmp_path: Path, plain_broker: Broker) -> None:
    """A network with a distinctive home id; an S2 device included from the CLI with its DSK, a
    wrong DSK refused, a SmartStart QR code added; the agent reads the network and publishes.
    No form of the home id or of any DSK is in any published byte (every topic), in buffer.db,
    its WAL or shared memory, in the agent's log, or in what the CLI printed."""
    network = MockNetwork(tmp_path / "zwavejs", [NODES[0], NODES[1]], home_id=CANARY_HOME_ID)
    gateway = Gateway(
        tmp_path / "gw",
        broker_url=plain_broker.url,
        sources_toml=f"""
[[sources]]
type = "zwave-js"
name = "zw"
url = "{{url}}"
reconnect_min_s = 0.2
reconnect_max_s = 1.0
  [[sources.nodes]]
  node_id = {SENSOR}
  name = "living-room"
  device_type = "room-sensor"
  [[sources.nodes]]
  node_id = {METER}
  name = "heat-pump-meter"
  device_type = "energy-meter"
""",
    )
    printed: list[bytes] = []

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        done = _heatgate("zwave", *args, "--config", str(gateway.config_path))
        printed.append((done.stdout + done.stderr).encode())
        return done

    try:
        network.start()
        asyncio.run(_wait_all_ready(network.url, {SENSOR, METER}))
        gateway.sources_toml = gateway.sources_toml.replace("{url}", network.url)
        gateway.provision()

        # S2 inclusion with the device's own DSK (from the mock's key pair), then one with a DSK
        # given that fails (no device joins: audited as failed), then a SmartStart QR code.
        network.inject(op="include", node=9, capabilities=NODES[0]["capabilities"])
        s2_dsk = next(line.split()[2] for line in network.mock_output().splitlines() if line.startswith("dsk 9 "))
        included = cli("include", "--s2-dsk", s2_dsk, "--timeout-s", "30")
        assert included.returncode == 0, included.stderr
        failed = cli("include", "--s2-dsk", CANARY_WRONG_DSK, "--timeout-s", "2")
        assert failed.returncode == 1 and "no device joined" in failed.stderr, failed.stderr
        added = cli("include", "--qr", smartstart_qr(CANARY_QR_DSK))
        assert added.returncode == 0, added.stderr

        with Subscriber("127.0.0.1", plain_broker.port, ["#"]) as subscriber:
            gateway.start()
            gateway.wait_status(
                lambda s: s["sources"]["zw"]["nodes"]["living-room"]["ready"] is True,
                timeout_s=30,
                what="the zwave-js source connected",
            )
            network.inject(op="sensor", node=SENSOR, type=1, scale=0, value=22.25)
            network.inject(op="meter", node=METER, type=1, scale=0, value=4321.5)

            def published() -> bool:
                records = _records(subscriber)
                events = {b.get("event") for stream, b in records if stream == "security"}
                readings = {b.get("device") for stream, b in records if stream != "security"}
                return {"zwave.include", "zwave.provision"} <= events and "living-room" in readings

            wait_until(published, timeout_s=40, what="the audits and the Z-Wave readings published")
            with subscriber._cond:
                messages = list(subscriber.messages)
            # The WAL as the running agent has it (a clean stop checkpoints it into buffer.db).
            live = {f"{p.name} (running)": p.read_bytes() for p in gateway.state.glob("buffer.db*")}
        assert gateway.stop() == 0, gateway.log_tail()
    finally:
        gateway.close()
        network.stop()

    records = _records_of([m.payload for m in messages])
    outcomes = [(b.get("event"), b.get("outcome")) for stream, b in records if stream == "security"]
    sent = b"\n".join(m.topic.encode() + b" " + m.payload for m in messages)
    assert ("zwave.include", "done") in outcomes and ("zwave.include", "failed") in outcomes, outcomes
    haystacks = {"published": sent, "cli output": b"\n".join(printed)}
    haystacks |= live | {p.name: p.read_bytes() for p in gateway.state.glob("buffer.db*")}
    haystacks |= {p.name: p.read_bytes() for p in gateway.root.glob("agent-*.log")}
    assert {"buffer.db", "buffer.db-wal (running)", "published", "agent-1.log"} <= set(haystacks), set(haystacks)
    leaks = _leaks(haystacks, home_id_forms(CANARY_HOME_ID))
    for dsk in (s2_dsk, CANARY_WRONG_DSK, CANARY_QR_DSK):
        leaks += _leaks(haystacks, dsk_forms(dsk))
    assert leaks == []
