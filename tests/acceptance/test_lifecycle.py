"""The agent's life as an operator lives it (issue 14, 4-6): ``systemctl reload`` (SIGHUP), a
second agent started on the same state dir, and the customer's privacy commands while the
agent writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest

from heatgate.agent.devtools.harness import HarnessError, stop_process, wait_until
from heatgate.agent.devtools.shipped import ShippedRig
from tests.acceptance.helpers import agent_cli, connection_report

pytestmark = [pytest.mark.broker, pytest.mark.serial]


def _all_committed_delivered(rig: ShippedRig, timeout_s: float = 20.0) -> None:
    try:
        wait_until(
            lambda: set(rig.committed_ids()) <= set(rig.delivered_ids()),
            timeout_s=timeout_s,
            what="every committed record at the subscriber",
            poll_s=0.2,
        )
    except HarnessError:
        missing = set(rig.committed_ids()) - set(rig.delivered_ids())
        raise AssertionError(
            f"{len(missing)} committed record(s) never delivered: {sorted(missing)[:5]}\n" + connection_report(rig)
        ) from None


@pytest.mark.slow
def test_sighup_reloads_without_a_stop_a_reconnect_or_a_lost_record(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    assert rig.command("ping").outcome == "done"
    before = set(rig.committed_ids())
    assert before, "nothing was committed before the reload: the test would prove nothing"

    os.kill(rig.gw.pid, signal.SIGHUP)
    time.sleep(2.0)
    exit_code = rig.gw.process.poll() if rig.gw.process else None
    assert rig.gw.running, f"the agent exited with {exit_code} on SIGHUP:\n{rig.gw.log_tail()}"
    assert rig.command("ping").outcome == "done"
    _all_committed_delivered(rig)
    assert set(rig.committed_ids()) > before  # records were made after the reload too
    assert rig.connections() == 1, connection_report(rig)
    document = rig.gw.wait_status(lambda _s: True)
    assert document["broker"]["connected"] is True


@pytest.mark.slow
def test_a_second_agent_on_the_same_state_dir_exits_1_naming_the_first(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    first_pid = rig.gw.pid
    second = subprocess.Popen(
        [sys.executable, "-m", "heatgate", "run", "--config", str(rig.gw.config_path)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        output, _ = second.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        stop_process(second)
        output = second.stdout.read() if second.stdout else b""
        pytest.fail(
            f"a second agent on the same state dir was still running after 20 s:\n{output.decode()[-2000:]}\n"
            + connection_report(rig)
        )
    finally:
        if second.stdout:
            second.stdout.close()
    text = output.decode(errors="replace")
    assert second.returncode == 1, text[-2000:]
    assert f"pid {first_pid}" in text, text[-2000:]
    assert "Traceback" not in text
    assert rig.gw.running
    assert rig.command("ping").outcome == "done"  # the first still answers and publishes
    _all_committed_delivered(rig)
    assert rig.connections() == 1, connection_report(rig)


@contextmanager
def _writing(rig: ShippedRig, per_s: float = 20.0) -> Iterator[list[int]]:
    """Signed commands at ``per_s`` while the block runs: each commits audit records and deletes
    them once acknowledged, so the agent writes to its database all the time."""
    assert rig.backend is not None
    stop = threading.Event()
    sent = [0]

    def load() -> None:
        while not stop.is_set():
            rig.backend.send(rig.gw.topic("cmd/ping"), rig.gw.signed("ping"))  # type: ignore[union-attr]
            sent[0] += 1
            stop.wait(1.0 / per_s)

    thread = threading.Thread(target=load, name="command-load", daemon=True)
    thread.start()
    try:
        yield sent
    finally:
        stop.set()
        thread.join(5)


@pytest.mark.slow
def test_privacy_commands_succeed_while_the_agent_writes(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    config = str(rig.gw.config_path)
    runs: list[tuple[str, subprocess.CompletedProcess[str]]] = []
    with _writing(rig, per_s=100.0) as sent:
        time.sleep(1.0)
        for _round in range(2):
            for args in (
                ("report", "--json"),
                ("object", "analytics"),
                ("object", "analytics", "--withdraw"),
                ("export", "--output", str(rig.root / "export.json")),
            ):
                runs.append((" ".join(args), agent_cli("privacy", *args, "--config", config)))
    assert sent[0] > 20
    failed = [
        (what, run.returncode, run.stderr[-1500:])
        for what, run in runs
        if run.returncode != 0 or "Traceback" in run.stderr
    ]
    assert not failed, failed
    json.loads(runs[0][1].stdout)
    assert rig.gw.running
