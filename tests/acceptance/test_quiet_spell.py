"""A quiet spell longer than the PUBACK timeout, then a publish: one broker connection for the
whole test (issue 14, 1). With the shipped policy a gateway is quiet for minutes; the PUBACK
timeout must measure the age of the oldest unacknowledged message, nothing else.

Run once with ``mqtt.puback_timeout_s = 2`` (the only key changed from the example) and once at
the shipped default (30 s), which takes a quiet spell of ~35 s."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from heatgate.agent.devtools.harness import wait_until
from heatgate.agent.devtools.shipped import ShippedRig
from tests.acceptance.helpers import connection_report, wait_quiet

pytestmark = [pytest.mark.broker, pytest.mark.serial]

DEFAULT_PUBACK_TIMEOUT_S = 30.0
"""The contract: ``mqtt.puback_timeout_s`` defaults to 30 s."""


def _quiet_spell_then_publish(rig: ShippedRig, timeout_s: float) -> None:
    quiet_s = timeout_s + max(3.0, timeout_s / 6)
    assert rig.connections() == 1, connection_report(rig)
    reached = wait_quiet(rig, quiet_s, timeout_s=2 * quiet_s + 30)
    assert reached >= quiet_s
    started = time.monotonic()

    response = rig.command("ping")  # a response, and two audit records through the buffer
    assert response.outcome == "done"
    wait_until(
        lambda: (
            sum(
                1
                for r in rig.records(route="security/audit", since_monotonic=started)
                if r.body.get("event") == "command.ping"
            )
            >= 2
        ),
        timeout_s=15,
        what="the ping's audit records at the subscriber",
    )
    time.sleep(3.0)  # a connection declared dead would have been dropped and re-made by now

    assert rig.connections() == 1, connection_report(rig)
    assert rig.gw.running
    document: dict[str, Any] = rig.gw.wait_status(lambda _s: True)
    assert document["broker"]["connected"] is True
    assert document["broker"]["reconnects"] <= 1, document["broker"]  # the first connect may count
    duplicates = {i: n for i, n in Counter(rig.delivered_ids()).items() if n > 1}
    assert not duplicates, f"records re-sent on one connection: {list(duplicates.items())[:5]}"


@pytest.mark.slow
def test_quiet_spell_past_a_short_puback_timeout_keeps_one_connection(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig(overrides={"mqtt": {"puback_timeout_s": 2.0}})
    _quiet_spell_then_publish(rig, 2.0)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_quiet_spell_past_the_default_puback_timeout_keeps_one_connection(
    shipped_rig: Callable[..., ShippedRig],
) -> None:
    rig = shipped_rig()  # the example config as shipped: the default PUBACK timeout
    _quiet_spell_then_publish(rig, DEFAULT_PUBACK_TIMEOUT_S)
