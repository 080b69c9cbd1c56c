"""Floods of refused envelopes: the security stream stays within the documented bound, every
refusal is audited or counted exactly once, nothing raises, and nothing the sender wrote reaches
the audit stream before its envelope is authenticated. The clock is injected: no test waits a
minute."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatgate.agent.commands import limiter as limiter_module
from heatgate.agent.commands import reasons
from heatgate.agent.commands.dispatch import SUMMARY_EVENT, CommandProcessor, Response
from heatgate.agent.commands.envelope import MAX_DEPTH, encode_envelope
from heatgate.agent.commands.limiter import DEFAULT_UNVERIFIED_PER_MIN, DEFAULT_VERIFIED_PER_MIN, WINDOW_S
from heatgate.agent.commands.sign import sign_approval, sign_envelope
from heatgate.agent.payloads import AuditBody
from tests.support.commands import GATEWAY, NOW_S, Clock, Keys, make_processor
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

KEYS = Keys()
DOCUMENTED_BOUND = 182  # docs/commands.md: "at most 182 records per minute from command refusals"


class TimedAudit:
    """The audit sink: every record with the (fake) time it was received, yielding to the loop
    on each write as a real buffer does, so that concurrent envelopes interleave."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.records: list[tuple[float, AuditBody]] = []

    async def __call__(self, body: AuditBody) -> str:
        await asyncio.sleep(0)
        self.records.append((self.clock(), body))
        await asyncio.sleep(0)
        return f"rec-{len(self.records)}"

    @property
    def bodies(self) -> list[AuditBody]:
        return [b for _, b in self.records]

    def summaries(self) -> list[AuditBody]:
        return [b for b in self.bodies if b.event == SUMMARY_EVENT]

    def suppressed(self) -> int:
        return sum(int(b.details["suppressed"] or 0) for b in self.summaries())

    def most_in_any_window(self, keep: Callable[[AuditBody], bool] = lambda _b: True) -> int:
        times = sorted(t for t, b in self.records if keep(b))
        return max((sum(1 for u in times if t <= u < t + WINDOW_S) for t in times), default=0)


def signed(
    command: str = "ping",
    args: dict[str, Any] | None = None,
    *,
    now_s: float = NOW_S,
    target: str = GATEWAY,
    ttl_s: int = 300,
    **kw: Any,
) -> bytes:
    return encode_envelope(
        sign_envelope(KEYS.command, target=target, command=command, args=args, issued_at=int(now_s), ttl_s=ttl_s, **kw)
    )


def out_of_bounds(now_s: float = NOW_S) -> bytes:
    """A valid new command that the profile refuses (so its nonce is not consumed)."""
    approval = sign_approval(
        KEYS.approval,
        operator="op-1",
        target=GATEWAY,
        issued_at=int(now_s),
        device="heatpump",
        point="flow_setpoint",
        value=80,
    )
    return signed(
        "device.write", {"device": "heatpump", "point": "flow_setpoint", "value": 80}, now_s=now_s, approval=approval
    )


async def build(clock: Clock, **options: Any) -> tuple[CommandProcessor, TimedAudit]:
    audit = TimedAudit(clock)
    processor, _, _, _ = await make_processor(MemoryState(), KEYS, clock, audit=audit, **options)  # type: ignore[arg-type]
    return processor, audit


def test_the_documented_bound_is_the_limiter_s() -> None:
    from heatgate.agent.commands.limiter import RefusalLimiter

    assert RefusalLimiter().records_per_window_max == DOCUMENTED_BOUND
    assert DEFAULT_UNVERIFIED_PER_MIN + DEFAULT_VERIFIED_PER_MIN + 2 == DOCUMENTED_BOUND
    doc = " ".join((Path(__file__).parents[1] / "docs" / "commands.md").read_text(encoding="utf-8").split())
    assert f"at most {DOCUMENTED_BOUND} records per minute from command refusals, whatever arrives" in doc


def test_2000_concurrent_unsigned_envelopes_give_one_budget_and_one_exact_summary() -> None:
    """The race of issue 14: the window was reset only after the summary was awaited, so 2,000
    concurrent envelopes gave 2,120 records and 512 summaries."""

    async def go() -> tuple[list[Response | None], TimedAudit]:
        clock = Clock()
        processor, audit = await build(clock)
        unsigned = json.loads(signed())
        del unsigned["signature"]
        raw = json.dumps(unsigned).encode()
        responses = list(await asyncio.gather(*(processor.handle(raw) for _ in range(2000))))
        await processor.close()
        return responses, audit

    responses, audit = run_async(go())
    answered = [r for r in responses if r is not None]
    assert len(answered) == DEFAULT_UNVERIFIED_PER_MIN
    assert all(r.reason == reasons.UNSIGNED for r in answered)
    individual = [b for b in audit.bodies if b.event == "command.unknown"]
    assert len(individual) == DEFAULT_UNVERIFIED_PER_MIN
    # one summary as the flood starts, one at close: the rest, exactly
    assert [b.details["suppressed"] for b in audit.summaries()] == [1, 2000 - DEFAULT_UNVERIFIED_PER_MIN - 1]
    assert len(individual) + audit.suppressed() == 2000
    assert len(audit.records) <= DOCUMENTED_BOUND


def test_a_replayed_envelope_flood_is_bounded_and_the_next_command_runs() -> None:
    """One captured envelope replayed 4,000 times gave 2,645 audit records."""

    async def go() -> tuple[list[Response | None], Response | None, TimedAudit]:
        clock = Clock()
        processor, audit = await build(clock)
        captured = signed("status")
        first = await processor.handle(captured)
        assert first is not None and first.outcome == "done"
        responses: list[Response | None] = []
        for _second in range(120):  # two minutes, in bursts
            responses += await asyncio.gather(*(processor.handle(captured) for _ in range(33)))
            clock.now_s += 1
        after = await processor.handle(signed("ping", now_s=clock()))
        await processor.close()
        return responses, after, audit

    responses, after, audit = run_async(go())
    assert after is not None and after.outcome == "done"
    replays = [b for b in audit.bodies if b.reason == reasons.REPLAYED]
    assert all(r.reason == reasons.REPLAYED for r in responses if r is not None)
    assert len(replays) == sum(r is not None for r in responses)
    assert len(replays) + audit.suppressed() == 120 * 33
    assert {b.details["class"] for b in audit.summaries()} == {"verified"}
    assert audit.most_in_any_window(lambda b: b.outcome in ("refused", "info")) <= DEFAULT_VERIFIED_PER_MIN + 1
    assert audit.most_in_any_window() <= DOCUMENTED_BOUND


def test_a_valid_new_command_refused_is_always_audited_even_in_a_flood_and_its_copies_are_not() -> None:
    async def go() -> tuple[list[Response | None], list[Response | None], TimedAudit]:
        clock = Clock()
        processor, audit = await build(clock, verified_per_min=3)
        for _ in range(10):  # exhaust the verified budget
            await processor.handle(signed(target="gw-other"))
        fresh = [await processor.handle(out_of_bounds()) for _ in range(20)]  # 20 distinct, each new
        copies = [await processor.handle(out_of_bounds_copy) for out_of_bounds_copy in [saved] * 5]
        await processor.close()
        return fresh, copies, audit

    saved = out_of_bounds()
    fresh, copies, audit = run_async(go())
    assert all(r is not None and r.reason == reasons.OUT_OF_BOUNDS for r in fresh)
    assert copies[0] is not None and copies[0].reason == reasons.OUT_OF_BOUNDS  # first sight of `saved`
    assert copies[1:] == [None] * 4  # the verified budget was spent: copies are counted
    audited = [b for b in audit.bodies if b.reason == reasons.OUT_OF_BOUNDS]
    assert len(audited) == 21
    assert audit.suppressed() == 7 + 4
    by_reason = {k: v for b in audit.summaries() for k, v in b.details.items() if k.startswith("reason.")}
    assert by_reason.keys() == {f"reason.{reasons.WRONG_TARGET}", f"reason.{reasons.OUT_OF_BOUNDS}"}


@pytest.mark.parametrize(
    "raw",
    [
        b'{"v":1,"args":{"a":' + b"[" * 1000 + b"]" * 1000 + b"}}",  # ~2 KB, 1,000 levels (issue 14)
        b"[" * 16_000,
        b'{"v":1,"target":"x","command":"ping","args":{"a":[[[[[[[[[1]]]]]]]]]},"issued_at":1,"expires_at":2,'
        b'"nonce":"AAAAAAAAAAAAAAAAAAAAAAAA","key_id":"0123456789abcdef","signature":"x"}',
    ],
    ids=["2kb-1000-levels", "16k-open-brackets", "just-past-the-limit"],
)
def test_deeply_nested_json_is_refused_and_audited(raw: bytes) -> None:
    async def go() -> tuple[Response | None, TimedAudit]:
        processor, audit = await build(Clock())
        response = await processor.handle(raw)
        await processor.close()
        return response, audit

    response, audit = run_async(go())
    assert response is not None and (response.outcome, response.reason) == ("refused", reasons.MALFORMED)
    assert "levels deep" in (response.detail or "")
    assert [(b.outcome, b.reason) for b in audit.bodies] == [("refused", reasons.MALFORMED)]


def test_nesting_up_to_the_limit_is_parsed_and_brackets_in_strings_do_not_count() -> None:
    deep_args = {"a": json.loads("[" * (MAX_DEPTH - 2) + "]" * (MAX_DEPTH - 2)), "s": "[[[[[[[[[[[[{{{{{{{"}

    async def go() -> Response | None:
        processor, _audit = await build(Clock())
        response = await processor.handle(signed("ping", deep_args))
        await processor.close()
        return response

    response = run_async(go())
    # it parsed and verified: refused only for its arguments, which ping does not take
    assert response is not None and (response.reason, response.command) == (reasons.MALFORMED, "ping")


def test_oversize_is_refused_before_parsing_and_counted_in_a_flood() -> None:
    raw = b"[" * 20_000  # would be nesting too, if it were parsed

    async def go() -> tuple[list[Response | None], TimedAudit]:
        processor, audit = await build(Clock(), unverified_per_min=2)
        responses = [await processor.handle(raw) for _ in range(10)]
        await processor.close()
        return responses, audit

    responses, audit = run_async(go())
    answered = [r for r in responses if r is not None]
    assert [r.reason for r in answered] == [reasons.OVERSIZE] * 2
    assert answered[0].detail == "20000 bytes, at most 16384"
    assert audit.suppressed() == 8
    assert all(b.details.get(f"reason.{reasons.OVERSIZE}") for b in audit.summaries())


PLANTED = "PLANTED-by-sender-7f3a"


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps({**json.loads(signed()), PLANTED: 1}).encode(),  # an unknown field (its name)
        json.dumps({"v": 1, "approval": {PLANTED * 3: 1}}).encode(),
        json.dumps({**json.loads(signed()), "v": PLANTED}).encode(),  # a literal's value
        json.dumps({**json.loads(signed()), "target": 7, PLANTED: 2}).encode(),
        json.dumps({**json.loads(signed()), "key_id": "a1b2c3d4e5f60718"}).encode(),  # not pinned
        json.dumps({PLANTED: [PLANTED]}).encode(),
        (PLANTED + "{").encode(),
    ],
    ids=["unknown-field", "nested-unknown-field", "literal-value", "type-and-field", "key-id", "only", "not-json"],
)
def test_the_sender_s_strings_never_reach_the_audit_stream_or_the_response(raw: bytes) -> None:
    async def go() -> tuple[Response | None, TimedAudit]:
        processor, audit = await build(Clock())
        response = await processor.handle(raw)
        await processor.close()
        return response, audit

    response, audit = run_async(go())
    assert response is not None and response.outcome == "refused" and response.command is None
    (record,) = audit.bodies
    assert record.actor == "remote:unverified"
    blob = msgspec.json.encode([response, record]).decode()
    assert PLANTED not in blob and "PLANTED" not in blob.upper()
    assert "a1b2c3d4e5f60718" not in blob
    assert f"({len(raw)} bytes)" in str(record.details["detail"]) or response.reason != reasons.MALFORMED


def test_unverified_malformed_details_name_only_the_envelope_s_own_fields() -> None:
    missing = json.loads(signed())
    del missing["nonce"]

    async def go() -> list[Response | None]:
        processor, _audit = await build(Clock())
        out = [
            await processor.handle(json.dumps(missing).encode()),
            await processor.handle(json.dumps({**json.loads(signed()), "issued_at": "soon"}).encode()),
        ]
        await processor.close()
        return out

    first, second = run_async(go())
    assert (
        first is not None
        and first.detail is not None
        and first.detail.startswith("not an envelope: missing field `nonce`")
    )
    assert second is not None and second.detail is not None and "at `$.issued_at`" in second.detail


def test_the_timer_writes_a_due_summary_when_no_refusal_comes(monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setattr(limiter_module, "WINDOW_S", 0.05)

    async def go() -> tuple[list[int], list[int]]:
        audit = TimedAudit(Clock())
        base, _, _, _ = await make_processor(MemoryState(), KEYS, Clock(), audit=audit)  # type: ignore[arg-type]
        processor = CommandProcessor(base.verifier, {}, audit, monotonic=time.monotonic, unverified_per_min=1)
        for _ in range(4):
            await processor.handle(b"{}")
        written_at_once = [int(b.details["suppressed"] or 0) for b in audit.summaries()]
        await asyncio.sleep(0.3)
        written_later = [int(b.details["suppressed"] or 0) for b in audit.summaries()]
        await processor.close()
        return written_at_once, written_later

    at_once, later = run_async(go())
    assert at_once == [1]  # the first suppression; the next two wait for the window
    assert later == [1, 2]  # ...and the timer wrote them without another envelope


def test_a_summary_that_cannot_be_written_keeps_its_counts() -> None:
    class Failing(TimedAudit):
        fail = True

        async def __call__(self, body: AuditBody) -> str:
            if body.event == SUMMARY_EVENT and self.fail:
                raise OSError("disk full")
            return await super().__call__(body)

    async def go() -> Failing:
        clock = Clock()
        audit = Failing(clock)
        processor, _, _, _ = await make_processor(
            MemoryState(),
            KEYS,
            clock,
            audit=audit,  # type: ignore[arg-type]
            unverified_per_min=1,
        )
        await processor.handle(b"{}")
        with pytest.raises(OSError):
            await processor.handle(b"{}")  # suppressed; its summary fails
        audit.fail = False
        await processor.handle(b"{}")
        await processor.close()
        return audit

    audit = run_async(go())
    assert audit.suppressed() == 2


# ---- the property: any sequence of (time, envelope kind) --------------------------------------

UNVERIFIED_BUDGET, VERIFIED_BUDGET = 3, 4
KINDS = [
    "unsigned",
    "garbage",
    "nested",
    "oversize",
    "forged",
    "replay",
    "wrong_target",
    "expired",
    "new_valid",
    "new_refused",
    "copy_of_refused",
]


@dataclass
class Tally:
    refused_limited: int = 0
    new_refused_at: list[float] = field(default_factory=list)


def _envelope(kind: str, now_s: float, captured: bytes, refused_once: bytes) -> bytes:
    if kind == "unsigned":
        doc = json.loads(signed(now_s=now_s))
        del doc["signature"]
        return json.dumps(doc).encode()
    if kind == "garbage":
        return b'{"v": 1, "\xff": 2}'
    if kind == "nested":
        return b"[" * 3000
    if kind == "oversize":
        return b" " * 17_000
    if kind == "forged":
        doc = json.loads(signed(now_s=now_s))
        doc["signature"] = doc["signature"][::-1]
        return json.dumps(doc).encode()
    if kind == "replay":
        return captured
    if kind == "wrong_target":
        return signed(now_s=now_s, target="gw-other")
    if kind == "expired":
        return signed(now_s=now_s - 4000, ttl_s=300)
    if kind == "new_valid":
        return signed(now_s=now_s)
    if kind == "new_refused":
        return out_of_bounds(now_s)
    assert kind == "copy_of_refused"
    return refused_once


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    events=st.lists(
        st.tuples(
            st.sampled_from([0.0, 0.0, 0.001, 0.5, 1.0, 10.0, 29.9, 59.999, 60.0, 61.0, 300.0]),
            st.lists(st.sampled_from(KINDS), min_size=1, max_size=6),
        ),
        min_size=1,
        max_size=40,
    )
)
def test_records_per_minute_stay_bounded_and_every_refusal_is_accounted(events: list[tuple[float, list[str]]]) -> None:
    """For any sequence of (time step, concurrent envelopes): in any 60 s the sink receives at most
    the budgets plus one summary per class, besides what valid new commands get; and audited
    refusals plus suppressed counts equal the refusals."""

    async def go() -> tuple[TimedAudit, Tally, int, int]:
        clock = Clock()
        processor, audit = await build(clock, unverified_per_min=UNVERIFIED_BUDGET, verified_per_min=VERIFIED_BUDGET)
        tally = Tally()
        captured = signed("status")
        first = await processor.handle(captured)  # accepted: its copies are replays
        assert first is not None and first.outcome == "done"
        refused_once = out_of_bounds()
        first = await processor.handle(refused_once)  # a valid new command, refused: its copies are limited
        assert first is not None and first.reason == reasons.OUT_OF_BOUNDS
        tally.new_refused_at.append(clock())
        answered_limited = 0
        for step_s, kinds in events:
            clock.now_s += step_s
            raws = [_envelope(kind, clock(), captured, refused_once) for kind in kinds]
            responses = await asyncio.gather(*(processor.handle(raw) for raw in raws))
            for kind, response in zip(kinds, responses, strict=True):
                if kind == "new_valid":
                    assert response is not None and response.outcome == "done"
                elif kind == "new_refused":
                    assert response is not None and response.reason == reasons.OUT_OF_BOUNDS
                    tally.new_refused_at.append(clock())
                else:
                    assert response is None or response.outcome == "refused"
                    tally.refused_limited += 1
                    answered_limited += response is not None
        before_close = len(audit.records)
        await processor.close()
        return audit, tally, answered_limited, before_close

    audit, tally, answered_limited, before_close = run_async(go())
    assert len(audit.records) - before_close <= 2  # close() writes at most the last summary of each class
    bound = UNVERIFIED_BUDGET + VERIFIED_BUDGET + 2
    while_running = sorted(t for t, b in audit.records[:before_close] if b.outcome in ("refused", "info"))
    for start in while_running:
        in_window = sum(1 for t in while_running if start <= t < start + WINDOW_S)
        always = sum(1 for t in tally.new_refused_at if start <= t < start + WINDOW_S)
        assert in_window - always <= bound
    records = [b for _, b in audit.records if b.outcome in ("refused", "info")]
    limited_audited = len(records) - len(audit.summaries()) - len(tally.new_refused_at)
    assert limited_audited == answered_limited
    assert limited_audited + audit.suppressed() == tally.refused_limited
