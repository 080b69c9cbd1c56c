"""The status socket: only the owner can open it; the CLI renders what the agent says."""

from __future__ import annotations

import asyncio
import json
import stat
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.status import StatusError, StatusServer, query_status

DOCUMENT: dict[str, Any] = {
    "gateway": "gw-t-0001",
    "version": "0.1.0",
    "uptime_s": 12.0,
    "healthy": False,
    "problems": ["source meter-bus restarting: timeout"],
    "sources": {
        "meter-bus": {
            "type": "modbus-rtu",
            "state": "restarting",
            "readings": 3,
            "last_reading_ts": time.time() - 30,
            "errors": {"timeout": 4},
        }
    },
    "broker": {"url": "mqtts://b:8883", "connected": True, "connected_since": time.time() - 100, "published": 7},
    "buffer": {
        "file_bytes": 1048576,
        "cap_bytes": 268435456,
        "alarms": [],
        "key_epochs": {"telemetry": 3},
        "streams": {
            "telemetry": {"queued": 5, "oldest_created_s": time.time() - 60, "published": 7, "evicted": 0, "expired": 0}
        },
    },
    "privacy": {"objections": ["analytics"], "restrictions": [], "consents": ["p1-15min"]},
}


async def _serve(path: Path, ready: asyncio.Event, stop: asyncio.Event) -> None:
    async def snapshot() -> dict[str, Any]:
        return DOCUMENT

    server = StatusServer(path, snapshot)
    await server.start()
    ready.set()
    await stop.wait()
    await server.close()


def _with_server(tmp_path: Path, client: Any) -> Any:
    path = tmp_path / "status.sock"

    async def main() -> Any:
        ready, stop = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(_serve(path, ready, stop))
        await ready.wait()
        try:
            return await asyncio.to_thread(client, path)
        finally:
            stop.set()
            await task

    return asyncio.run(main())


def test_socket_mode_and_document(tmp_path: Path) -> None:
    def client(path: Path) -> tuple[int, dict[str, Any]]:
        return stat.S_IMODE(path.stat().st_mode), query_status(path)

    mode, document = _with_server(tmp_path, client)
    assert mode == 0o600
    assert document["gateway"] == "gw-t-0001"
    assert not (tmp_path / "status.sock").exists()  # removed on close


def test_cli_renders_and_exits_1_when_unhealthy(tmp_path: Path) -> None:
    def client(path: Path) -> tuple[subprocess.CompletedProcess[str], subprocess.CompletedProcess[str]]:
        table = subprocess.run(
            [sys.executable, "-m", "heatgate", "status", "--socket", str(path)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        raw = subprocess.run(
            [sys.executable, "-m", "heatgate", "status", "--socket", str(path), "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return table, raw

    table, raw = _with_server(tmp_path, client)
    assert table.returncode == 1
    assert "unhealthy" in table.stdout and "meter-bus" in table.stdout and "restarting" in table.stdout
    assert "objected" in table.stdout  # the analytics stream's objection is shown
    assert json.loads(raw.stdout)["broker"]["published"] == 7


def test_no_agent_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(StatusError, match="no agent is running"):
        query_status(tmp_path / "absent.sock")
    result = subprocess.run(
        [sys.executable, "-m", "heatgate", "status", "--socket", str(tmp_path / "x.sock")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1 and "no agent is running" in result.stderr
