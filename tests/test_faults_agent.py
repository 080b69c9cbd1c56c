"""Faults under the running agent (its own process): a corrupt database, a full disk, a serial
device unplugged and plugged back, a broker that accepts the connection and never acknowledges.

Each test looks at what the field would see: ``heatgate status --json``, the database file
(``PRAGMA integrity_check``, the ids the buffer decrypts) and the agent's exit code.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.devtools.harness import Gateway, LoadRig, load_sources, wait_until
from heatgate.agent.devtools.localbroker import free_port
from heatgate.drivers.sim.p1 import P1Simulator
from tests.support.leaks import run_async
from tests.support.tmpfs import tmpfs

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.serial]


def _dead_url() -> str:
    return f"mqtt://127.0.0.1:{free_port()}"


def _status_json(gateway: Gateway) -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        [sys.executable, "-m", "heatgate", "status", "--json", "--socket", str(gateway.socket_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return result.returncode, json.loads(result.stdout)


def _queued(document: dict[str, Any]) -> int:
    return sum(s.get("queued", 0) for s in document["buffer"]["streams"].values())


# ---- a corrupt database -------------------------------------------------------------------------


def test_corrupt_database_is_quarantined_and_the_agent_runs_on(tmp_path: Path) -> None:
    with LoadRig(tmp_path / "rig", load=10.0, with_p1=False) as rig:
        gateway = rig.start()
        gateway.start()
        gateway.wait_status(lambda s: _queued(s) + s["broker"]["published"] > 0, what="records")
        assert gateway.stop() == 0
        before = gateway.db_path.stat().st_size
        assert before > 4096
        with gateway.db_path.open("r+b") as handle:  # garbage over the header and the first pages
            handle.write(b"\xde\xad\xbe\xef garbage " * 800)
        for suffix in ("-wal", "-shm"):
            Path(f"{gateway.db_path}{suffix}").unlink(missing_ok=True)

        gateway.start()
        document = gateway.wait_status(lambda s: s["broker"]["published"] > 0, what="publishing again")
        code, shown = _status_json(gateway)
        alarms = document["buffer"]["alarms"]
        assert any(a.startswith("corrupt_db_quarantined:") for a in alarms), alarms
        assert not document["healthy"]
        assert any("corrupt_db_quarantined" in p for p in document["problems"])
        assert code == 1 and shown["buffer"]["alarms"] == alarms  # `heatgate status` says so too
        aside = gateway.state / alarms[0].split(":", 1)[1]
        assert aside.exists() and aside.read_bytes().startswith(b"\xde\xad\xbe\xef")  # kept for analysis
        assert gateway.running
        assert gateway.stop() == 0
    assert gateway.integrity() == "ok"


# ---- a full disk ----------------------------------------------------------------------------------


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs for the state directory (the tests run as root)."""
    with tmpfs(tmp_path / "state", "4m") as mount:
        yield mount


def test_full_disk_evicts_alarms_and_keeps_running(tmp_path: Path, small_fs: Path) -> None:
    with LoadRig(tmp_path / "rig", load=100.0) as rig:
        rig.start()
        gateway = Gateway(
            tmp_path / "gw",
            broker_url=_dead_url(),
            state_dir=small_fs,
            sources_toml=rig.gateway.sources_toml if rig.gateway else "",
        )
        gateway.provision()
        filler = small_fs / "filler"
        free = _free_bytes(small_fs)
        filler.write_bytes(b"\0" * (free - 600 * 1024))  # leave ~600 KiB: minutes of home load, seconds here
        try:
            gateway.start()
            full = gateway.wait_status(
                lambda s: "disk_full" in s["buffer"]["alarms"] and s["buffer"]["streams"]["telemetry"]["evicted"] > 0,
                timeout_s=40,
                what="the disk_full alarm",
            )
            assert not full["healthy"] and any("disk_full" in p for p in full["problems"])
            readings = full["sources"]["smartmeter"]["readings"]
            # Still reading, still committing (eviction makes room for the newest).
            later = gateway.wait_status(
                lambda s: s["sources"]["smartmeter"]["readings"] > readings + 100, what="readings after the disk filled"
            )
            assert later["buffer"]["streams"]["service"]["evicted"] == 0
            assert gateway.running
            assert gateway.stop() == 0, gateway.log_tail()
            assert gateway.integrity() == "ok"
            stored = gateway.export()
            # Faults and status changes are never evicted: all that were queued are still there.
            service_queued = later["buffer"]["streams"]["service"]["queued"]
            assert sum(r.stream == "service" for r in stored) >= service_queued, _full_disk_report(
                later, stored, small_fs, gateway
            )
        finally:
            filler.unlink(missing_ok=True)
        # Space back and the broker reachable: what was kept drains.
        gateway.set_broker_url(rig.broker.url)
        kept = {r.id for r in stored}
        gateway.start()
        wait_until(lambda: kept <= set(rig.received_ids()), timeout_s=30, what="the kept records at the subscriber")
        assert gateway.stop() == 0


def _full_disk_report(later: dict[str, Any], stored: list[Any], state: Path, gateway: Gateway) -> str:
    """What a failure of the full-disk test needs to be understood: the status the agent showed,
    what the database held afterwards per stream, the state directory and its free space."""
    held: dict[str, int] = {}
    for record in stored:
        held[record.stream] = held.get(record.stream, 0) + 1
    files = {p.name: p.stat().st_size for p in sorted(state.iterdir())}
    conn = sqlite3.connect(f"file:{gateway.db_path}?mode=ro", uri=True)
    try:
        tables = {
            name: conn.execute(query).fetchall()
            for name, query in (
                ("counters", "SELECT stream, name, value FROM counters ORDER BY stream, name"),
                ("quarantine", "SELECT stream, reason, count(*) FROM quarantine GROUP BY stream, reason"),
                ("data_keys", "SELECT epoch, stream, start_s FROM data_keys ORDER BY epoch"),
                ("records", "SELECT stream, epoch, count(*) FROM records GROUP BY stream, epoch"),
            )
        }
    finally:
        conn.close()
    return (
        f"status buffer: {json.dumps(later['buffer'])}\nheld after the stop: {held}\n"
        f"tables after the stop: {tables}\n"
        f"state dir: {files}, free {_free_bytes(state)} B\nagent log tail:\n{gateway.log_tail(6000)}"
    )


def _free_bytes(path: Path) -> int:
    import os

    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


# ---- a serial device unplugged and plugged back ------------------------------------------------


def test_p1_unplugged_and_plugged_back_resumes(tmp_path: Path) -> None:
    link = tmp_path / "p1"
    gateway = Gateway(tmp_path / "gw", broker_url=_dead_url(), sources_toml=load_sources(p1_link=link))

    async def main() -> None:
        sim = P1Simulator(interval_s=0.1, link=link)
        await sim.start()
        gateway.provision()

        async def wait_status(pred: Callable[[dict[str, Any]], bool], what: str) -> dict[str, Any]:
            return await asyncio.to_thread(gateway.wait_status, pred, timeout_s=20, what=what)

        try:
            gateway.start()
            before = await wait_status(lambda s: s["sources"]["smartmeter"]["telegrams_ok"] > 5, "telegrams")
            assert before["sources"]["smartmeter"]["port_state"] == "open"
            sim.unplug()
            gone = await wait_status(lambda s: s["sources"]["smartmeter"]["port_state"] != "open", "the port lost")
            assert gone["sources"]["smartmeter"]["port_losses"] >= 1
            assert any("smartmeter" in p for p in gone["problems"]), gone["problems"]
            count = gone["sources"]["smartmeter"]["telegrams_ok"]
            await asyncio.sleep(1.0)  # unplugged for a while: the driver keeps trying, nothing crashes
            sim.plug()
            back = await wait_status(
                lambda s: (
                    s["sources"]["smartmeter"]["telegrams_ok"] > count + 5
                    and s["sources"]["smartmeter"]["port_state"] == "open"
                ),
                "readings again",
            )
            assert not any("smartmeter" in p for p in back["problems"]), back["problems"]
            assert gateway.running
            assert await asyncio.to_thread(gateway.stop) == 0
        finally:
            await asyncio.to_thread(gateway.close)
            await sim.stop()

    run_async(main())


# ---- a broker that accepts the connection and never acknowledges -------------------------------

from tests.support.black_hole import BlackHoleBroker  # noqa: E402


def test_broker_that_never_acknowledges_keeps_everything(tmp_path: Path) -> None:
    link = tmp_path / "p1"

    async def main() -> None:
        hole = BlackHoleBroker()
        await hole.start()
        sim = P1Simulator(interval_s=0.05, link=link)
        await sim.start()
        gateway = Gateway(
            tmp_path / "gw", broker_url=f"mqtt://127.0.0.1:{hole.port}", sources_toml=load_sources(p1_link=link)
        )
        gateway.provision()
        try:
            gateway.start()
            document = await asyncio.to_thread(
                gateway.wait_status,
                lambda s: hole.publishes > 0 and _queued(s) > 50 and not s["healthy"],
                timeout_s=30,
                what="records queued and the broker reported",
            )
            broker = document["broker"]
            assert broker["published"] == 0
            assert any("broker" in p for p in document["problems"]), document["problems"]
            streams = document["buffer"]["streams"]
            assert all(s["published"] == 0 and s["evicted"] == 0 and s["expired"] == 0 for s in streams.values())
            assert gateway.running
            assert await asyncio.to_thread(gateway.stop) == 0
            stored = await asyncio.to_thread(gateway.committed_ids)
            assert len(stored) >= _queued(document)  # nothing deleted; more was committed at the stop
            assert hole.connections >= 1
        finally:
            await asyncio.to_thread(gateway.close)
            await sim.stop()
            await hole.close()

    run_async(main())
