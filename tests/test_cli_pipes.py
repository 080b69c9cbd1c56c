"""Commands piped into a reader that stops early, and piped output that is never cut.

Each command runs as its own process with standard output a pipe whose reading end is closed
before the command writes (what ``| head -0`` does, and ``| head -1`` once it has its line):
every write fails with EPIPE. No traceback, no "Exception ignored" on stderr, and the exit code
the command has without a pipe (0, or 1 for an unhealthy status).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.status import StatusServer
from heatgate.config import data_path

LONG_NAME = "heat-pump-in-the-utility-room-behind-the-washing-machine-second-floor"
DOCUMENT: dict[str, Any] = {
    "gateway": "gw-pipe-0001",
    "version": "0.1.0",
    "uptime_s": 12.0,
    "healthy": True,
    "problems": [],
    "sources": {
        LONG_NAME: {
            "type": "modbus-tcp",
            "state": "running",
            "readings": 3,
            "last_reading_ts": time.time() - 3,
            "errors": {},
        }
    },
    "broker": {
        "url": "mqtts://broker.example.net:8883",
        "connected": True,
        "connected_since": time.time() - 100,
        "published": 7,
    },
    "buffer": {
        "file_bytes": 1 << 20,
        "cap_bytes": 1 << 28,
        "alarms": [],
        "key_epochs": {"telemetry": 3},
        "streams": {
            "telemetry": {"queued": 5, "oldest_created_s": time.time() - 60, "published": 7, "evicted": 0, "expired": 0}
        },
    },
    "privacy": {"objections": [], "restrictions": [], "consents": []},
}


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    text = data_path("heatgate.example.toml").read_text()
    text = text.replace('state_dir = "/tmp/heatgate-example"', f'state_dir = "{tmp_path / "state"}"')
    path = tmp_path / "heatgate.toml"
    path.write_text(text)
    return path


@pytest.fixture
def status_socket(tmp_path: Path) -> Iterator[Path]:
    """A status server answering ``DOCUMENT`` on its own event loop thread."""
    path = tmp_path / "status.sock"
    loop = asyncio.new_event_loop()
    ready = threading.Event()

    async def snapshot() -> dict[str, Any]:
        return DOCUMENT

    server = StatusServer(path, snapshot)

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.start())
        ready.set()
        loop.run_forever()
        loop.run_until_complete(server.close())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield path
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


def _run_into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """Run ``heatgate ARGS`` with stdout a pipe already closed at its reading end."""
    read_fd, write_fd = os.pipe()
    os.close(read_fd)
    try:
        return subprocess.run(
            [sys.executable, "-m", "heatgate", *args],
            stdout=write_fd,
            stderr=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            text=True,
            timeout=60,
            env=_env(),
        )
    finally:
        os.close(write_fd)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    return env


def _assert_quiet(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "BrokenPipe" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr


@pytest.mark.parametrize(
    "words",
    [
        ("check-config", "--offline", "--json"),
        ("check-config", "--offline"),
        ("privacy", "report", "--json"),
        ("privacy", "report"),
        ("privacy", "export"),
        ("--help",),
    ],
)
def test_config_commands_into_a_closed_pipe(config_file: Path, words: tuple[str, ...]) -> None:
    extra = () if words == ("--help",) else ("--config", str(config_file))
    if words == ("privacy", "export"):
        from heatgate.buffer.keys import create_master_key

        create_master_key(config_file.parent / "state" / "keys" / "master.key")
    result = _run_into_closed_pipe(*words, *extra)
    _assert_quiet(result)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("json_flag", [(), ("--json",)])
def test_status_into_a_closed_pipe(status_socket: Path, json_flag: tuple[str, ...]) -> None:
    result = _run_into_closed_pipe("status", "--socket", str(status_socket), *json_flag)
    _assert_quiet(result)
    assert result.returncode == 0, result.stderr


def test_piped_status_table_is_not_cut_at_80_columns(status_socket: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "heatgate", "status", "--socket", str(status_socket)],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(LONG_NAME in line and "running" in line for line in lines), result.stdout
    assert "broker.example.net:8883" in result.stdout
    assert max(len(line) for line in lines) > 80  # one row per source, as wide as it needs


def test_piped_json_is_whole(status_socket: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "heatgate", "status", "--socket", str(status_socket), "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=_env(),
    )
    assert json.loads(result.stdout)["sources"][LONG_NAME]["state"] == "running"
