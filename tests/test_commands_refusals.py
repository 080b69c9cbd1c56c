"""The refusal matrix: every reason code, each with its response and its audit record, and the
accepted paths next to it."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from heatgate.agent.commands import reasons
from heatgate.agent.commands.dispatch import CommandContext, CommandProcessor, Response
from heatgate.agent.commands.envelope import Envelope, encode_envelope
from heatgate.agent.commands.keys import key_id
from heatgate.agent.commands.sign import new_nonce, sign_approval, sign_envelope
from tests.support.commands import GATEWAY, NOW_S, AuditLog, Calls, Clock, Keys, answered, make_processor
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

KEYS = Keys()
CMD_KID = key_id(KEYS.command.public_key())
WRITE = {"device": "heatpump", "point": "flow_setpoint", "value": 45.5}


def signed(
    command: str = "ping",
    args: dict[str, Any] | None = None,
    *,
    key: Ed25519PrivateKey | None = None,
    target: str = GATEWAY,
    issued_at: int = NOW_S,
    ttl_s: int = 300,
    **kw: Any,
) -> bytes:
    return encode_envelope(
        sign_envelope(
            key or KEYS.command, target=target, command=command, args=args, issued_at=issued_at, ttl_s=ttl_s, **kw
        )
    )


def approval(
    *,
    key: Ed25519PrivateKey | None = None,
    target: str = GATEWAY,
    issued_at: int = NOW_S,
    ttl_s: int = 300,
    **write: Any,
) -> Any:
    w = {**WRITE, **write}
    return sign_approval(
        key or KEYS.approval,
        operator="op-42",
        target=target,
        issued_at=issued_at,
        ttl_s=ttl_s,
        device=w["device"],
        point=w["point"],
        value=w["value"],
    )


def write_cmd(args: dict[str, Any] | None = None, **approval_kw: Any) -> bytes:
    return signed("device.write", args or WRITE, approval=approval(**approval_kw))


def reencoded(raw: bytes, change: Callable[[dict[str, Any]], None]) -> bytes:
    """Change the JSON after signing (the signature is kept as it was)."""
    doc = json.loads(raw)
    change(doc)
    return json.dumps(doc).encode()


def forged_by_stranger() -> bytes:
    env = sign_envelope(KEYS.stranger, target=GATEWAY, command="ping", issued_at=NOW_S)
    return encode_envelope(msgspec.structs.replace(env, key_id=CMD_KID))


def run(raws: list[bytes], **options: Any) -> tuple[list[Response], Calls, AuditLog]:
    async def go() -> tuple[list[Response], Calls, AuditLog]:
        processor, calls, audit, _ = await make_processor(MemoryState(), KEYS, Clock(), **options)
        return [await answered(processor, raw) for raw in raws], calls, audit

    return run_async(go())


UNAUTHENTICATED = "unauthenticated"

# (case id, raw bytes, expected reason, expected audit event, whether the envelope was authenticated)
CASES: list[tuple[str, Callable[[], bytes], str, str, bool]] = [
    ("oversize", lambda: signed("ping", {"pad": "x" * 20_000}), reasons.OVERSIZE, "command.unknown", False),
    ("not-json", lambda: b"\xff{not json", reasons.MALFORMED, "command.unknown", False),
    ("json-array", lambda: b"[1, 2]", reasons.MALFORMED, "command.unknown", False),
    (
        "missing-nonce",
        lambda: reencoded(signed(), lambda d: d.pop("nonce")),
        reasons.MALFORMED,
        "command.unknown",
        False,
    ),
    ("short-nonce", lambda: signed(nonce="AAAAAAAAAAAAAAAA"), reasons.MALFORMED, "command.unknown", False),
    (
        "unknown-field",
        lambda: reencoded(signed(), lambda d: d.update(extra=1)),
        reasons.MALFORMED,
        "command.unknown",
        False,
    ),
    (
        "time-as-string",
        lambda: reencoded(signed(), lambda d: d.update(issued_at="2024-05-01T12:00:00Z")),
        reasons.MALFORMED,
        "command.unknown",
        False,
    ),
    ("unsigned", lambda: reencoded(signed(), lambda d: d.pop("signature")), reasons.UNSIGNED, "command.unknown", False),
    (
        "empty-signature",
        lambda: reencoded(signed(), lambda d: d.update(signature="")),
        reasons.UNSIGNED,
        "command.unknown",
        False,
    ),
    (
        "tampered-args",
        lambda: reencoded(
            signed("privacy.object", {"stream": "analytics"}), lambda d: d["args"].update(stream="telemetry")
        ),
        reasons.BAD_SIGNATURE,
        "command.unknown",
        False,
    ),
    (
        "tampered-target",
        lambda: reencoded(signed(target="gw-other"), lambda d: d.update(target=GATEWAY)),
        reasons.BAD_SIGNATURE,
        "command.unknown",
        False,
    ),
    (
        "signature-not-base64",
        lambda: reencoded(signed(), lambda d: d.update(signature="!!" * 40)),
        reasons.BAD_SIGNATURE,
        "command.unknown",
        False,
    ),
    ("forged-with-pinned-key-id", forged_by_stranger, reasons.BAD_SIGNATURE, "command.unknown", False),
    ("unknown-key", lambda: signed(key=KEYS.stranger), reasons.UNKNOWN_KEY, "command.unknown", False),
    ("approval-key-as-command-key", lambda: signed(key=KEYS.approval), reasons.UNKNOWN_KEY, "command.unknown", False),
    ("wrong-target", lambda: signed(target="gw-someone-else"), reasons.WRONG_TARGET, "command.ping", True),
    ("expired", lambda: signed(issued_at=NOW_S - 1000, ttl_s=300), reasons.EXPIRED, "command.ping", True),
    ("not-yet-valid", lambda: signed(issued_at=NOW_S + 120), reasons.NOT_YET_VALID, "command.ping", True),
    ("empty-window", lambda: signed(ttl_s=0), reasons.MALFORMED, "command.ping", True),
    ("window-too-long", lambda: signed(ttl_s=2 * 86400), reasons.MALFORMED, "command.ping", True),
    ("unknown-command", lambda: signed("shell.exec", {"cmd": "id"}), reasons.UNKNOWN_COMMAND, "command.unknown", True),
    ("args-missing", lambda: signed("privacy.object", {}), reasons.MALFORMED, "command.privacy.object", True),
    ("args-unknown-field", lambda: signed("ping", {"x": 1}), reasons.MALFORMED, "command.ping", True),
    (
        "erase-both",
        lambda: signed("privacy.erase", {"stream": "telemetry", "all": True}),
        reasons.MALFORMED,
        "command.privacy.erase",
        True,
    ),
    ("erase-neither", lambda: signed("privacy.erase", {}), reasons.MALFORMED, "command.privacy.erase", True),
    (
        "export-bad-recipient",
        lambda: signed("privacy.export", {"recipient": "short"}),
        reasons.MALFORMED,
        "command.privacy.export",
        True,
    ),
    ("approval-on-non-write", lambda: signed("ping", approval=approval()), reasons.MALFORMED, "command.ping", True),
    (
        "write-without-approval",
        lambda: signed("device.write", WRITE),
        reasons.APPROVAL_REQUIRED,
        "command.device.write",
        True,
    ),
    (
        "approval-by-command-key",
        lambda: write_cmd(key=KEYS.command),
        reasons.BAD_APPROVAL,
        "command.device.write",
        True,
    ),
    ("approval-by-stranger", lambda: write_cmd(key=KEYS.stranger), reasons.BAD_APPROVAL, "command.device.write", True),
    ("approval-other-value", lambda: write_cmd(value=55.0), reasons.BAD_APPROVAL, "command.device.write", True),
    (
        "approval-int-vs-float",
        lambda: write_cmd({**WRITE, "value": 45.0}, value=45),
        reasons.BAD_APPROVAL,
        "command.device.write",
        True,
    ),
    (
        "approval-other-point",
        lambda: write_cmd(point="dhw_setpoint"),
        reasons.BAD_APPROVAL,
        "command.device.write",
        True,
    ),
    (
        "approval-other-gateway",
        lambda: write_cmd(target="gw-other"),
        reasons.BAD_APPROVAL,
        "command.device.write",
        True,
    ),
    (
        "approval-expired",
        lambda: write_cmd(issued_at=NOW_S - 4000, ttl_s=600),
        reasons.BAD_APPROVAL,
        "command.device.write",
        True,
    ),
    (
        "approval-tampered",
        lambda: signed(
            "device.write",
            {**WRITE, "value": 59.0},
            approval=msgspec.structs.replace(approval(), write=msgspec.structs.replace(approval().write, value=59.0)),
        ),
        reasons.BAD_APPROVAL,
        "command.device.write",
        True,
    ),
    (
        "approval-unsigned",
        lambda: signed("device.write", WRITE, approval=msgspec.structs.replace(approval(), signature=None)),
        reasons.BAD_APPROVAL,
        "command.device.write",
        True,
    ),
    (
        "not-writable",
        lambda: write_cmd({**WRITE, "point": "compressor_hours"}, point="compressor_hours"),
        reasons.NOT_WRITABLE,
        "command.device.write",
        True,
    ),
    (
        "unknown-device",
        lambda: write_cmd({**WRITE, "device": "boiler"}, device="boiler"),
        reasons.NOT_WRITABLE,
        "command.device.write",
        True,
    ),
    (
        "above-max",
        lambda: write_cmd({**WRITE, "value": 80}, value=80),
        reasons.OUT_OF_BOUNDS,
        "command.device.write",
        True,
    ),
    (
        "below-min",
        lambda: write_cmd({**WRITE, "value": -5.0}, value=-5.0),
        reasons.OUT_OF_BOUNDS,
        "command.device.write",
        True,
    ),
]


@pytest.mark.parametrize(
    ("raw_factory", "reason", "event", "authenticated"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_refused_answered_and_audited(
    raw_factory: Callable[[], bytes], reason: str, event: str, authenticated: bool
) -> None:
    responses, calls, audit = run([raw_factory()])
    response = responses[0]
    assert (response.outcome, response.reason) == ("refused", reason), response.detail
    assert calls.calls == [], "no handler may run for a refused command"
    assert len(audit.records) == 1
    record = audit.records[0]
    assert (record.event, record.outcome, record.reason) == (event, "refused", reason)
    assert record.actor == (f"remote:{CMD_KID}" if authenticated else "remote:unverified")
    assert response.record_id == "rec-1"
    assert response.at == "2024-05-01T12:50:00Z"
    assert reason in reasons.REFUSAL_REASONS


def test_every_refusal_reason_is_exercised() -> None:
    assert {c[2] for c in CASES} | {reasons.REPLAYED} == reasons.REFUSAL_REASONS


def test_replayed_is_refused_and_audited_and_runs_once() -> None:
    raw = signed("privacy.object", {"stream": "analytics"})
    responses, calls, audit = run([raw, raw])
    assert [r.outcome for r in responses] == ["done", "refused"]
    assert responses[1].reason == reasons.REPLAYED
    assert len(calls.calls) == 1
    assert [(a.outcome, a.reason) for a in audit.records] == [
        ("accepted", None),
        ("done", None),
        ("refused", reasons.REPLAYED),
    ]
    assert audit.records[2].actor == f"remote:{CMD_KID}"


def test_concurrent_copies_run_once() -> None:
    raw = signed("status")

    async def go() -> list[Response]:
        processor, _, _, _ = await make_processor(MemoryState(), KEYS, Clock())
        return list(await asyncio.gather(*(answered(processor, raw) for _ in range(5))))

    outcomes = sorted(r.outcome for r in run_async(go()))
    assert outcomes == ["done", "refused", "refused", "refused", "refused"]


def test_approval_is_single_use_even_in_a_new_envelope() -> None:
    shared = approval()
    first = signed("device.write", WRITE, approval=shared)
    second = signed("device.write", WRITE, approval=shared)  # new nonce, same approval
    responses, calls, _ = run([first, second])
    assert [r.outcome for r in responses] == ["done", "refused"]
    assert responses[1].reason == reasons.REPLAYED
    assert len(calls.calls) == 1


def test_skew_tolerance_edges() -> None:
    # expired 59 s ago (skew 60): accepted; issued 59 s ahead: accepted
    ok_late = signed(issued_at=NOW_S - 359, ttl_s=300)
    ok_early = signed(issued_at=NOW_S + 59)
    late = signed(issued_at=NOW_S - 361, ttl_s=300)
    responses, _, _ = run([ok_late, ok_early, late])
    assert [r.outcome for r in responses] == ["done", "done", "refused"]
    assert responses[2].reason == reasons.EXPIRED


def test_refused_command_can_be_corrected_with_the_same_nonce() -> None:
    nonce = new_nonce()
    wrong = signed("privacy.object", {}, nonce=nonce)
    right = signed("privacy.object", {"stream": "analytics"}, nonce=nonce)
    responses, _, _ = run([wrong, right])
    assert [(r.outcome, r.reason) for r in responses] == [("refused", reasons.MALFORMED), ("done", None)]


def test_catalog_command_without_handler_is_unknown() -> None:
    async def go() -> tuple[Response, AuditLog]:
        processor, _, audit, _ = await make_processor(MemoryState(), KEYS, Clock())
        bare = CommandProcessor(processor.verifier, {}, audit, clock=Clock())
        return await answered(bare, signed("status")), audit

    response, audit = run_async(go())
    assert (response.outcome, response.reason) == ("refused", reasons.UNKNOWN_COMMAND)
    assert audit.records[0].event == "command.status"


def test_field_order_and_whitespace_do_not_change_the_verdict() -> None:
    raws = []
    for seed in range(3):
        doc = json.loads(write_cmd())
        items = list(doc.items())
        random.Random(seed).shuffle(items)
        approval_items = list(doc["approval"].items())
        random.Random(seed + 10).shuffle(approval_items)
        reordered = dict(items)
        reordered["approval"] = dict(approval_items)
        raws.append(json.dumps(reordered, indent=seed + 1, ensure_ascii=True).encode())
    responses, calls, _ = run(raws)
    assert [r.outcome for r in responses] == ["done"] * 3
    assert len(calls.calls) == 3


def test_accepted_write_runs_with_operator_and_audits_readback() -> None:
    responses, calls, audit = run([write_cmd()])
    response = responses[0]
    assert (response.outcome, response.result) == ("done", {"readback": 45.5})
    ctx: CommandContext = calls.calls[0]
    assert (ctx.args.device, ctx.args.point, ctx.args.value, ctx.operator) == (
        "heatpump",
        "flow_setpoint",
        45.5,
        "op-42",
    )
    assert ctx.actor == f"remote:{CMD_KID}"
    assert [(a.event, a.outcome) for a in audit.records] == [
        ("command.device.write", "accepted"),
        ("command.device.write", "done"),
    ]
    assert audit.records[1].details == {
        "device": "heatpump",
        "point": "flow_setpoint",
        "value": 45.5,
        "operator": "op-42",
        "readback": 45.5,
    }


def test_handler_failure_is_answered_and_audited() -> None:
    responses, _, audit = run([signed("privacy.object", {"stream": "service"})])
    assert (responses[0].outcome, responses[0].reason) == ("failed", reasons.HANDLER_ERROR)
    assert "not objectable" in (responses[0].detail or "")
    assert [(a.outcome, a.reason) for a in audit.records] == [("accepted", None), ("failed", reasons.HANDLER_ERROR)]


def test_handler_timeout_is_a_failure() -> None:
    async def slow(_ctx: CommandContext) -> dict[str, Any]:
        await asyncio.sleep(10)
        return {}

    async def go() -> tuple[Response, AuditLog]:
        processor, _, audit, _ = await make_processor(MemoryState(), KEYS, Clock())
        quick = CommandProcessor(processor.verifier, {"status": slow}, audit, clock=Clock(), handler_timeout_s=0.05)
        return await answered(quick, signed("status")), audit

    response, audit = run_async(go())
    assert (response.outcome, response.reason) == ("failed", reasons.TIMEOUT)
    assert audit.records[-1].reason == reasons.TIMEOUT


def test_refusal_details_do_not_echo_argument_values() -> None:
    canary = "CANARY-SERIAL-123456"
    raws = [
        signed("privacy.object", {"stream": canary + "!"}),
        signed("shell.exec", {"cmd": canary}),
        reencoded(signed("ping"), lambda d: d.update(extra=canary)),
    ]
    responses, _, audit = run(raws)
    assert all(r.outcome == "refused" for r in responses)
    blob = msgspec.json.encode([responses, audit.records])
    assert canary.encode() not in blob


def test_ping_is_built_in() -> None:
    responses, _, _ = run([signed("ping")])
    assert (responses[0].outcome, responses[0].result, responses[0].command) == ("done", {"pong": True}, "ping")


def test_verifier_refuses_a_key_pinned_twice() -> None:
    async def go() -> None:
        from heatgate.agent.commands.nonces import NonceStore
        from heatgate.agent.commands.verify import CommandVerifier

        nonces = await NonceStore.load(MemoryState())
        with pytest.raises(ValueError, match="both command and approval"):
            CommandVerifier(GATEWAY, KEYS.command_keys(), KEYS.command_keys(), nonces)
        with pytest.raises(ValueError, match="does not match"):
            CommandVerifier(GATEWAY, {"0" * 16: KEYS.command.public_key()}, {}, nonces)

    run_async(go())


def test_envelope_type_is_the_wire_shape() -> None:
    env = msgspec.json.decode(signed("ping"), type=Envelope)
    assert env.v == 1 and env.key_id == CMD_KID and len(env.nonce) == 22


def test_a_flood_of_unsigned_envelopes_is_summarised_not_audited_one_by_one() -> None:
    """Anyone who can publish can send garbage: past the per-minute budget it is neither audited
    nor answered but counted, and summaries say exactly how many; a signed refusal has its own
    budget. (Before: every refusal was answered, the summary was written at the next minute's
    first refusal and the budget reset only after it was awaited.)"""

    async def go() -> tuple[list[Response | None], AuditLog]:
        clock = Clock()
        processor, _calls, audit, _ = await make_processor(MemoryState(), KEYS, clock, unverified_per_min=5)
        responses = [await processor.handle(b"[1]") for _ in range(20)]
        responses.append(await processor.handle(signed("ping", target="gw-someone-else")))  # its own budget
        clock.now_s += 61
        responses.append(await processor.handle(b"[2]"))  # the window slid: audited, and the summary is due
        await processor.close()
        return responses, audit

    responses, audit = run_async(go())
    answered = [r for r in responses if r is not None]
    assert len(answered) == 5 + 1 + 1 and all(r.outcome == "refused" for r in answered)
    individual = [r for r in audit.records if r.event == "command.unknown"]
    assert len(individual) == 5 + 1
    assert any(r.reason == reasons.WRONG_TARGET for r in audit.records)
    summaries = [r for r in audit.records if r.event == "command.refusals_suppressed"]
    # the first as soon as one is suppressed, the next a minute later, with the rest: 15 in all
    assert [s.details["suppressed"] for s in summaries] == [1, 14]
    assert [s.details[f"reason.{reasons.MALFORMED}"] for s in summaries] == [1, 14]
    assert {s.details["class"] for s in summaries} == {"unverified"}
