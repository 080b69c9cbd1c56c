"""A smart meter's cable pulled for a while and put back is read again within 5 s
(``heatgate.drivers.serialport.REOPEN_MAX_S``), by the agent as it ships (the example config's
P1 source, the shipped defaults): not up to a network retry's 30 s later, however long the
cable was out. The P1 simulator is its own process, stopped and started again on the same link."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.devtools.shipped import ShippedRig, ShippedSims

pytestmark = [pytest.mark.broker, pytest.mark.serial]

REOPEN_CAP_S = 5.0
"""The contract: a lost serial port is tried again at least this often."""
OUT_S = 15.0
"""Long enough that the reopen backoff reaches its cap (0.5, 1, 2, 4, then the cap)."""
READ_AGAIN_SLACK_S = 5.0
"""The P1 telegram interval (1 s), the status socket's polling and a busy machine's lag."""


def _p1(status: dict[str, Any]) -> dict[str, Any]:
    return next(source for source in status["sources"].values() if source.get("type") == "p1")


def test_a_replugged_p1_cable_is_read_again_within_the_reopen_cap(tmp_path: Path) -> None:
    # Simulators of its own (not the session's): the P1 one is replaced, and this test owns it.
    with ShippedSims(tmp_path / "sims") as sims:
        rig = ShippedRig(tmp_path / "rig", sims).start()
        try:
            _unplug_and_plug(rig, sims)
        finally:
            rig.close()


def _unplug_and_plug(rig: ShippedRig, sims: ShippedSims) -> None:
    gateway = rig.gw
    gateway.wait_status(lambda s: _p1(s)["telegrams_ok"] > 0, timeout_s=30, what="P1 telegrams")
    sims.unplug_p1()
    try:
        gateway.wait_status(lambda s: _p1(s)["port_state"] != "open", timeout_s=20, what="the P1 port lost")
        time.sleep(OUT_S)
        before = _p1(gateway.wait_status(lambda s: True))["telegrams_ok"]
    finally:
        sims.plug_p1()
    plugged = time.monotonic()
    gateway.wait_status(
        lambda s: _p1(s)["telegrams_ok"] > before,
        timeout_s=REOPEN_CAP_S + READ_AGAIN_SLACK_S,
        what=f"a telegram within {REOPEN_CAP_S + READ_AGAIN_SLACK_S:g} s of the replug",
    )
    assert time.monotonic() - plugged <= REOPEN_CAP_S + READ_AGAIN_SLACK_S
