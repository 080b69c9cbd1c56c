"""Small checks shared by the acceptance tests."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from heatgate.agent.devtools.harness import HarnessError, wait_until
from heatgate.agent.devtools.shipped import ShippedRig, broker_connection_lines

__all__ = ["agent_cli", "connection_report", "settle", "wait_quiet"]


def wait_quiet(rig: ShippedRig, quiet_s: float, *, timeout_s: float) -> float:
    """Wait until nothing was published under the gateway's topics for ``quiet_s`` (a telemetry
    window closing meanwhile starts the wait again); returns the quiet time reached."""
    prefix = rig.gw.topic("")

    def quiet_for() -> float:
        times = [m.at_monotonic for m in rig.messages() if m.topic.startswith(prefix)]
        return time.monotonic() - max(times, default=0.0)

    wait_until(lambda: quiet_for() >= quiet_s, timeout_s=timeout_s, what=f"{quiet_s:g} s without a publish", poll_s=0.5)
    return quiet_for()


def settle(rig: ShippedRig, *, still_s: float, timeout_s: float) -> None:
    """Wait until no message at all arrived at the subscriber for ``still_s``."""

    def still() -> bool:
        messages = rig.messages()
        return not messages or time.monotonic() - messages[-1].at_monotonic >= still_s

    try:
        wait_until(still, timeout_s=timeout_s, what=f"{still_s:g} s of silence", poll_s=0.2)
    except HarnessError:
        pass  # the caller's assertions say what kept going


def connection_report(rig: ShippedRig) -> str:
    assert rig.broker is not None
    lines = broker_connection_lines(rig.broker, rig.gw.client_id)
    return (
        f"{len(lines)} connection(s) of {rig.gw.client_id} at the broker:\n"
        + "\n".join(lines[:10])
        + ("\n…" if len(lines) > 10 else "")
        + "\nagent log tail:\n"
        + rig.gw.log_tail(2000)
    )


def agent_cli(*args: str, timeout_s: float = 60.0, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m heatgate ARGS`` as a user runs it (``heatgate ARGS``)."""
    return subprocess.run(
        [sys.executable, "-m", "heatgate", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )
