"""`heatgate privacy ...` while the agent writes, and while something keeps the buffer locked.

The agent keeps a write transaction open for its commit interval and opens the next one at
once, so under load buffer.db is write-locked nearly all the time. A local command must still
get its turn (the turnstile, buffer/turnstile.py), and where it cannot it exits 1 with a
sentence, never a traceback.
"""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from heatgate.agent.devtools.harness import LoadRig

COMMANDS: list[tuple[str, ...]] = [
    ("report", "--json"),
    ("export",),
    ("consent", "p1-15min"),
    ("restrict", "telemetry"),
    ("restrict", "telemetry", "--lift"),
    ("object", "analytics"),
    ("object", "analytics", "--withdraw"),
    ("erase", "--stream", "telemetry", "--yes"),
    ("erase", "--yes"),
]


def _privacy(config: Path, *words: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heatgate", "privacy", *words, "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.broker
@pytest.mark.slow
@pytest.mark.serial
def test_every_privacy_command_succeeds_while_the_agent_writes_under_load(tmp_path: Path) -> None:
    with LoadRig(tmp_path / "rig", load=100.0) as rig:
        gateway = rig.start()
        gateway.start()
        gateway.wait_status(
            lambda s: (
                s["broker"].get("connected") and any(st.get("published", 0) for st in s["buffer"]["streams"].values())
            ),
            timeout_s=60,
            what="the agent publishing",
        )
        for words in COMMANDS:
            result = _privacy(gateway.config_path, *words)
            assert result.returncode == 0, (words, result.stderr)
            assert "Traceback" not in result.stderr, (words, result.stderr)
            assert gateway.running, gateway.log_tail()
        # The agent keeps storing and publishing after the erase, with keys it can still open
        # after a restart: it dropped the data keys the erase destroyed instead of sealing new
        # records with them.
        published = gateway.wait_status(lambda s: True)["broker"]["published"]
        gateway.wait_status(
            lambda s: s["broker"]["published"] > published + 50, timeout_s=30, what="publishing after the erase"
        )
        assert gateway.stop() == 0
    stats = asyncio.run(_stats(gateway.config_path))
    assert sum(s.auth_failures for s in stats.streams.values()) == 0
    assert stats.alarms == []


async def _stats(config_path: Path):  # type: ignore[no-untyped-def]
    from heatgate.agent.config import load_config
    from heatgate.agent.privacy.policy import load_policy
    from heatgate.buffer.adapter import open_buffer
    from heatgate.buffer.keys import load_master_key

    config = load_config(config_path).config
    buffer = await open_buffer(
        config.buffer_path,
        load_master_key(config.master_key_path, None),
        cap_bytes=config.buffer.cap_bytes,
        retention_s=load_policy(config.policy_path).retention_s(),
    )
    try:
        await buffer.export_all()  # opens every stored record: one sealed with a lost key is counted
        return await buffer.stats()
    finally:
        await buffer.close()


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    from heatgate.buffer.keys import create_master_key
    from heatgate.config import data_path

    text = data_path("heatgate.example.toml").read_text()
    text = text.replace('state_dir = "/tmp/heatgate-example"', f'state_dir = "{tmp_path / "state"}"')
    path = tmp_path / "heatgate.toml"
    path.write_text(text)
    create_master_key(tmp_path / "state" / "keys" / "master.key")
    return path


@pytest.mark.parametrize("words", [("object", "analytics"), ("erase", "--yes"), ("export",)])
def test_a_write_lock_held_beyond_the_timeout_is_one_sentence_and_exit_1(
    config_file: Path, tmp_path: Path, words: tuple[str, ...]
) -> None:
    assert _privacy(config_file, "consent", "p1-15min").returncode == 0  # the buffer exists
    holder = sqlite3.connect(tmp_path / "state" / "buffer.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        result = _privacy(config_file, *words)
        waited_s = time.monotonic() - started
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "OperationalError" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is busy" in lines[0] and "try again" in lines[0], result.stderr
    assert waited_s >= 4.5  # it waited for the lock (busy timeout 5 s) before giving up
    # Released: the same command works now.
    assert _privacy(config_file, *words).returncode == 0


def test_a_second_local_command_waits_for_the_first(config_file: Path, tmp_path: Path) -> None:
    """Two local commands at once: the second waits at the turnstile, then succeeds."""
    assert _privacy(config_file, "consent", "p1-15min").returncode == 0
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "heatgate", "privacy", *words, "--config", str(config_file)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for words in (("object", "analytics"), ("restrict", "telemetry"), ("erase", "--yes"))
    ]
    for process in processes:
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0 and "Traceback" not in err, err
