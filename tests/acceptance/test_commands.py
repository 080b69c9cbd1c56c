"""Signed commands against the shipped gateway (issue 14, 2-3 and the nested/oversize part):
a round trip is followed by silence, the gateway never consumes its own response topic, floods
of unsigned and of replayed envelopes stay within the audit bound of docs/commands.md, and
pathological envelopes are answered, audited or counted without a traceback."""

from __future__ import annotations

import json
import math
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest

from heatgate.agent.cli.cmd import SendError
from heatgate.agent.commands import limiter
from heatgate.agent.commands.envelope import DEFAULT_MAX_BYTES
from heatgate.agent.devtools.harness import HarnessError, wait_until
from heatgate.agent.devtools.shipped import ShippedRig
from tests.acceptance.helpers import connection_report, settle

pytestmark = [pytest.mark.broker, pytest.mark.serial]

FLOOD = 2000
WATCH_S = 5.0


def audit_bounds_per_min() -> tuple[int, int]:
    """(unverified, verified) refusal records audited one by one per minute, from the code;
    each bound adds one summary record per minute (docs/commands.md)."""
    return int(limiter.DEFAULT_UNVERIFIED_PER_MIN), int(limiter.DEFAULT_VERIFIED_PER_MIN)


def allowed_records(per_min: int, elapsed_s: float) -> int:
    """Records a bound of ``per_min`` (+ one summary) lets through in ``elapsed_s``: every
    minute window the span touches, plus one summary of the window before."""
    windows = math.floor(elapsed_s / 60.0) + 2
    return windows * (per_min + 1)


def unsigned_envelope(gateway_id: str) -> bytes:
    now = int(time.time())
    return json.dumps(
        {
            "v": 1,
            "target": gateway_id,
            "command": "ping",
            "args": {},
            "issued_at": now,
            "expires_at": now + 300,
            "nonce": secrets.token_urlsafe(16),
            "key_id": "0000000000000000",
        }
    ).encode()


def test_a_signed_round_trip_is_followed_by_silence(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    assert rig.broker is not None
    sent = time.monotonic()
    cli = subprocess.run(  # as README "For backend engineers" does it
        [
            sys.executable,
            "-m",
            "heatgate",
            "cmd",
            "send",
            "--url",
            rig.broker.url,
            "--target",
            rig.gw.gateway_id,
            "--sign-key",
            str(rig.gw.command_key_file()),
            "--command",
            "status",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert cli.returncode == 0, cli.stdout + cli.stderr
    assert json.loads(cli.stdout)["outcome"] == "done"
    answers = rig.responses(since_monotonic=sent)
    assert answers, "the answer did not reach the subscriber"
    time.sleep(WATCH_S)
    after = [json.loads(m.payload).get("outcome") for m in rig.responses(since_monotonic=answers[0].at_monotonic)]
    assert len(after) == 1, f"{len(after) - 1} message(s) on cmd/response after the answer: {after[:10]}"
    assert rig.connections() == 1, connection_report(rig)


def test_a_message_on_the_gateways_own_response_topic_is_never_answered(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    assert rig.backend is not None
    stray = json.dumps(
        {"schema": "heatgate.cmd-response/1", "outcome": "refused", "reason": "malformed", "at": "2024-05-01T12:00:00Z"}
    ).encode()
    sent = time.monotonic()
    rig.backend.send(rig.gw.topic("cmd/response"), stray, correlation_data=b"stray").wait_for_publish(10)
    time.sleep(WATCH_S)
    seen = rig.responses(since_monotonic=sent)
    assert [m.payload for m in seen] == [stray], f"{len(seen) - 1} answer(s) to the gateway's own response topic"
    assert rig.gw.running


def _flood_then_command(rig: ShippedRig, payloads: list[bytes], per_min: int) -> None:
    """Publish ``payloads`` on cmd/ping, let the gateway work through them, then a fresh signed
    command must be answered; the security records of the whole span stay within the bound."""
    assert rig.backend is not None
    started = time.monotonic()
    rig.backend.flood(rig.gw.topic("cmd/ping"), payloads, timeout_s=60)
    settle(rig, still_s=3.0, timeout_s=30)
    try:
        response = rig.command("ping", wait_s=20)
    except SendError as exc:  # no answer; the audit figures below still tell
        response = exc
    time.sleep(2.0)  # the answered command's audit records, and any straggler
    elapsed_s = time.monotonic() - started
    audit = rig.records(route="security/audit", since_monotonic=started)
    allowed = allowed_records(per_min, elapsed_s) + 2  # + the fresh command's accepted and done
    outcomes: dict[str, int] = {}
    for record in audit:
        key = f"{record.body.get('event')}/{record.body.get('outcome')}/{record.body.get('reason')}"
        outcomes[key] = outcomes.get(key, 0) + 1
    assert len(audit) <= allowed, (
        f"{len(audit)} security records in {elapsed_s:.0f} s after {len(payloads)} "
        f"envelopes; the bound allows {allowed}: {outcomes}"
    )
    assert not isinstance(response, SendError), f"the next valid command was not answered: {response}"
    assert response.outcome == "done"
    assert rig.gw.running and rig.connections() == 1, connection_report(rig)


@pytest.mark.slow
def test_an_unsigned_flood_stays_within_the_audit_bound(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    unverified, _verified = audit_bounds_per_min()
    _flood_then_command(rig, [unsigned_envelope(rig.gw.gateway_id) for _ in range(FLOOD)], unverified)


@pytest.mark.slow
def test_a_replay_flood_stays_within_the_audit_bound(shipped_rig: Callable[..., ShippedRig]) -> None:
    rig = shipped_rig()
    _unverified, verified = audit_bounds_per_min()
    captured = rig.gw.signed("ping")
    assert rig.exchange(captured).outcome == "done"  # the valid envelope an attacker captured
    _flood_then_command(rig, [captured] * FLOOD, verified)


@pytest.mark.slow
def test_nested_and_oversize_envelopes_are_answered_or_audited_without_a_traceback(
    shipped_rig: Callable[..., ShippedRig],
) -> None:
    rig = shipped_rig()
    assert rig.backend is not None
    cases: dict[str, bytes] = {
        "nested-arrays": b"[" * 1000 + b"]" * 1000,
        "nested-objects": b'{"args":' * 1000 + b"1" + b"}" * 1000,
        "nested-args": (
            b'{"v":1,"target":"'
            + rig.gw.gateway_id.encode()
            + b'","command":"ping","args":'
            + b'{"a":' * 1000
            + b"1"
            + b"}" * 1000
            + b"}"
        ),
        "oversize": b'{"v":1,"pad":"' + b"x" * (DEFAULT_MAX_BYTES + 1024) + b'"}',
    }
    started = time.monotonic()
    for name, payload in cases.items():
        rig.backend.send(
            rig.gw.topic("cmd/ping"),
            payload,
            correlation_data=name.encode(),
            response_topic=rig.gw.topic("cmd/response"),
        ).wait_for_publish(10)

    def outcome(name: str) -> str | None:
        answers = rig.responses(correlation_data=name.encode(), since_monotonic=started)
        return json.loads(answers[0].payload).get("reason") if answers else None

    try:
        wait_until(lambda: all(outcome(name) for name in cases), timeout_s=15, what="an answer to each envelope")
    except HarnessError:
        pass  # judged below: an audit record (or a counted suppression) also does
    refusals = [
        r.body.get("reason")
        for r in rig.records(route="security/audit", since_monotonic=started)
        if r.body.get("outcome") == "refused"
    ]
    status: dict[str, Any] = rig.gw.wait_status(lambda _s: True)
    answers = {name: outcome(name) for name in cases}
    assert all(answers.values()) or len(refusals) >= len(cases), (
        f"not every envelope was answered or audited: answers {answers}; refusal records {refusals}"
    )
    log = rig.gw.log_tail(10**7)
    assert "Traceback" not in log and "RecursionError" not in log, log[-3000:]
    assert rig.gw.running and status["broker"]["connected"] is True
    assert rig.command("ping").outcome == "done"
