"""kill -9 of the whole agent under 100 x home load: nothing committed is lost, the file stays sound.

The agent runs as its own process against real simulators (P1 on a pty every 10 ms, heat pump
and energy meter over Modbus TCP every 100 ms) and a real Mosquitto. Each round kills it at a
random moment (start-up included); some rounds run with the broker unreachable so that the
killed agent leaves a backlog. What was committed is read from buffer.db between runs (the
buffer decrypts it); after a last clean run every one of those ids must have reached the
subscriber. 50 rounds: ``bench/faults/kill9.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from heatgate.agent.devtools.harness import LoadRig, kill_rounds

pytestmark = [pytest.mark.broker, pytest.mark.slow, pytest.mark.serial]


def test_kill_9_under_load_loses_no_committed_record(tmp_path: Path) -> None:
    with LoadRig(tmp_path / "rig", load=100.0) as rig:
        rig.start()
        result = kill_rounds(rig, 5, seed=7, min_s=0.2, max_s=2.5, outage_share=0.5, after_ready=True)
    assert [r.integrity for r in result.rounds] == ["ok"] * 5
    assert result.final_integrity == "ok"
    # The rounds did commit records, and some were killed before they were delivered:
    # otherwise this test would prove nothing.
    assert result.committed > 0
    assert sum(r.undelivered for r in result.rounds) > 0
    assert result.missing == []
    assert result.final_exit_code == 0
