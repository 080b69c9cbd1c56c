"""A replugged serial cable is read again within ``REOPEN_MAX_S``, however long it was out.

The P1 and Z-Wave runners as they ship (no reopen arguments) reopen a lost local port with a
backoff capped at :data:`heatgate.drivers.serialport.REOPEN_MAX_S`, not at a network retry's
30 s: a meter unplugged for an hour is read again seconds after it is back, and the backend's
``available`` follows within one flush of that."""

from __future__ import annotations

from pathlib import Path

import pytest

from heatgate.agent.config import P1Source, ZwaveSource
from heatgate.backoff import Backoff
from heatgate.drivers.p1.source import P1Runner
from heatgate.drivers.serialport import REOPEN_MAX_S, REOPEN_MIN_S
from heatgate.drivers.zwave.source import ZwaveRunner


def _shipped_backoffs(tmp_path: Path) -> dict[str, Backoff]:
    port = str(tmp_path / "absent")
    return {
        "p1": P1Runner(P1Source(name="smartmeter", port=port))._port.backoff,
        "zwave": ZwaveRunner(ZwaveSource(name="zwave", port=port))._port.backoff,
    }


@pytest.mark.parametrize("runner", ["p1", "zwave"])
def test_a_port_out_for_a_long_time_is_retried_at_least_every_reopen_max(tmp_path: Path, runner: str) -> None:
    backoff = _shipped_backoffs(tmp_path)[runner]
    # An hour of failed opens at the shortest waits is far more tries than that: every wait is capped.
    delays_s = [backoff.next_delay_s() for _ in range(int(3600 / (REOPEN_MIN_S / 2)) // 100)]
    assert max(delays_s) <= REOPEN_MAX_S
    assert min(delays_s) >= REOPEN_MIN_S / 2  # and never a tight loop
    # The cap is reached: the waits grow, so a port that stays away is not tried every half second.
    assert max(delays_s) > REOPEN_MAX_S / 2
