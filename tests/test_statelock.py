"""One agent per state directory: the lock itself (the agent's use of it is in test_daemon_reload)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from heatgate.agent.statelock import LOCK_NAME, StateLock, StateLocked


def test_a_second_holder_is_refused_with_the_pid_and_the_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    lock = StateLock.acquire(state)
    try:
        path = state / LOCK_NAME
        assert path.stat().st_mode & 0o777 == 0o600
        assert path.read_text().strip() == str(os.getpid())
        with pytest.raises(StateLocked) as caught:
            StateLock.acquire(state)
        assert caught.value.pid == os.getpid()
        assert str(caught.value) == f"another agent (pid {os.getpid()}) is running on {state}; stop it first"
    finally:
        lock.release()
    StateLock.acquire(state).release()  # free again once released


def test_the_kernel_releases_the_lock_of_a_killed_holder(tmp_path: Path) -> None:
    state = tmp_path / "state"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from heatgate.agent.statelock import StateLock\n"
            f"StateLock.acquire(Path({str(state)!r})); print('held', flush=True); time.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StateLocked) as caught:
            StateLock.acquire(state)
        assert caught.value.pid == holder.pid
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        if holder.stdout is not None:
            holder.stdout.close()
    StateLock.acquire(state).release()  # a stale file with a dead PID does not block
