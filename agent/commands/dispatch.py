"""Running commands: verify, audit, call the injected handler, answer.

``CommandProcessor.handle(raw, correlation_data=...)`` returns the :class:`Response` to publish
on ``<prefix>/<gateway>/cmd/response`` (with the request's correlation data), or None when the
refusal was suppressed (see below). Every envelope received leaves an audit record *before*
anything else happens: ``refused`` with its reason, or ``accepted``; an accepted command then
leaves a second record, ``done`` or ``failed``. Refusals of envelopes that are not valid new
commands (unsigned, forged, replayed, another gateway's...) are limited per minute by
:class:`agent.commands.limiter.RefusalLimiter`: past the budget they are neither audited nor
answered, but counted exactly in ``command.refusals_suppressed`` summary records. Audit
records are ``AuditBody`` values with event ``command.<name>`` (``command.unknown`` while the
envelope is not authenticated), actor ``remote:<key id>`` (``remote:unverified`` before the
signature checked out) and details without personal data (never argument values, except the
device, point and value of an approved write and the approving operator's id).

Handlers are injected per command: ``async def handler(ctx: CommandContext) -> dict`` returning a
JSON-able result. ``ping`` is built in. For ``privacy.export`` the processor seals the handler's
result (JSON) to the recipient key in the signed arguments; the response carries only the sealed
box. A handler signals a failure it understands by raising :class:`CommandFailed`.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from heatgate.agent.commands import reasons
from heatgate.agent.commands.catalog import EXPORT_COMMAND, WRITE_COMMAND, ExportArgs
from heatgate.agent.commands.envelope import b64url_decode, b64url_encode
from heatgate.agent.commands.errors import CommandError
from heatgate.agent.commands.limiter import (
    DEFAULT_UNVERIFIED_PER_MIN,
    DEFAULT_VERIFIED_PER_MIN,
    RefusalClass,
    RefusalLimiter,
    SeenRefusals,
    Summary,
)
from heatgate.agent.commands.seal import seal
from heatgate.agent.commands.verify import CommandVerifier, NonceUnrecorded, Refusal, Verified
from heatgate.agent.payloads import AuditBody
from heatgate.logs import get_logger
from heatgate.sodium import X25519PublicKey

__all__ = [
    "RESPONSE_SCHEMA",
    "AuditSink",
    "CommandContext",
    "CommandFailed",
    "CommandProcessor",
    "Handler",
    "Response",
    "decode_response",
    "encode_response",
    "iso_utc",
]

log = get_logger("heatgate.commands")

RESPONSE_SCHEMA: Final = "heatgate.cmd-response/1"
SEALED_FORMAT: Final = "heatgate-sealed/v1"

Outcome = Literal["accepted", "refused", "failed", "done"]
AuditOutcome = Literal["accepted", "refused", "failed", "done", "info"]


class Response(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """The answer on ``cmd/response``. ``outcome``: ``done`` (ran), ``refused`` (did not run;
    ``reason`` is a refusal code), ``failed`` (accepted but did not complete; ``reason`` is a
    failure code). ``record_id`` is the id of the audit record of receipt; ``nonce`` echoes the
    envelope's nonce once it is authenticated (for MQTT 3.1.1, which has no correlation data)."""

    schema: str = RESPONSE_SCHEMA
    command: str | None = None
    outcome: Outcome
    reason: str | None = None
    detail: str | None = None
    result: dict[str, Any] = {}
    record_id: str | None = None
    nonce: str | None = None
    at: str


_response_decoder: Final = msgspec.json.Decoder(Response)


def encode_response(response: Response) -> bytes:
    return msgspec.json.encode(response)


def decode_response(raw: bytes) -> Response:
    """Raises ``msgspec.MsgspecError``."""
    try:
        return _response_decoder.decode(raw)
    except UnicodeDecodeError as exc:
        raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None


def iso_utc(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


class CommandFailed(CommandError):
    """Raised by a handler: the command was accepted but could not be carried out."""

    def __init__(self, detail: str, *, result: Mapping[str, Any] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.result = dict(result or {})


@dataclass(frozen=True, slots=True)
class CommandContext:
    """What a handler gets: the typed ``args`` and who asked (``actor`` = ``remote:<key id>``)."""

    command: str
    args: Any
    actor: str
    key_id: str
    operator: str | None
    nonce: str


Handler = Callable[[CommandContext], Awaitable[dict[str, Any]]]
AuditSink = Callable[[AuditBody], Awaitable[str | None]]
"""Commits one audit record (security stream) and returns its record id."""


async def _ping(_ctx: CommandContext) -> dict[str, Any]:
    return {"pong": True}


SUMMARY_EVENT: Final = "command.refusals_suppressed"


class CommandProcessor:
    """Verify, audit, run. ``handlers`` maps command names to handlers; a catalog command
    without a handler is refused as ``unknown_command`` (``ping`` is always there).

    ``clock`` (seconds since the epoch) stamps records and responses; ``monotonic`` (seconds)
    drives the refusal budgets, so that a wall-clock step cannot open or close them. Call
    :meth:`close` when stopping: it writes the last summary of suppressed refusals."""

    def __init__(
        self,
        verifier: CommandVerifier,
        handlers: Mapping[str, Handler],
        audit: AuditSink,
        *,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        handler_timeout_s: float = 30.0,
        unverified_per_min: int = DEFAULT_UNVERIFIED_PER_MIN,
        verified_per_min: int = DEFAULT_VERIFIED_PER_MIN,
    ) -> None:
        self.verifier = verifier
        self._handlers: dict[str, Handler] = {"ping": _ping, **handlers}
        self._audit = audit
        self._clock = clock
        self._monotonic = monotonic
        self.handler_timeout_s = handler_timeout_s
        self.limiter = RefusalLimiter(unverified_per_min=unverified_per_min, verified_per_min=verified_per_min)
        # a valid envelope is refusable as new for at most its window plus the skew on both sides
        self._seen = SeenRefusals(verifier.max_ttl_s + 2 * verifier.skew_s)
        self._summary_timer: asyncio.Task[None] | None = None

    async def handle(self, raw: bytes, *, correlation_data: bytes | None = None) -> Response | None:
        """Decide, audit and (if accepted) run one envelope; returns the response to publish, or
        None for a refusal past its budget (counted for the next summary instead). Raises only if
        the audit sink raises (then nothing ran)."""
        try:
            verdict = await self.verifier.verify(raw)
        except NonceUnrecorded as exc:
            return await self._unrecorded(exc)
        if isinstance(verdict, Refusal):
            return await self._refused(verdict)
        if verdict.command not in self._handlers:
            return await self._refused(
                Refusal(
                    reasons.UNKNOWN_COMMAND,
                    "not enabled on this gateway",
                    command=verdict.command,
                    key_id=verdict.key_id,
                    nonce=verdict.envelope.nonce,
                    fingerprint=verdict.envelope.signature,
                )
            )
        return await self._run(verdict)

    async def close(self) -> None:
        """Stops the summary timer and writes every pending summary (the counts are never lost)."""
        timer, self._summary_timer = self._summary_timer, None
        if timer is not None:
            timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await timer
        await self._write_summaries(self.limiter.take_all(self._monotonic()))

    def _admitted(self, key_id: str | None, fingerprint: str | None, reason: str) -> bool:
        """Whether a refusal is audited and answered. Synchronous: decided and counted before
        anything awaits, so concurrent envelopes see each other's decisions."""
        now_s = self._monotonic()
        refusal_class: RefusalClass
        if key_id is None:
            refusal_class = "unverified"
        elif fingerprint is not None and self._seen.first_sight(fingerprint, now_s):
            return True  # what a valid new command got: always audited in full
        else:
            refusal_class = "verified"
        return self.limiter.admit(refusal_class, reason, now_s)

    async def _refused(self, refusal: Refusal) -> Response | None:
        admitted = self._admitted(refusal.key_id, refusal.fingerprint, refusal.reason)
        await self._write_summaries(self.limiter.due_summaries(self._monotonic()))
        if not admitted:
            self._arm_summary_timer()
            return None
        event = f"command.{refusal.command or 'unknown'}"
        actor = f"remote:{refusal.key_id}" if refusal.key_id else "remote:unverified"
        record_id = await self._record(event, actor, "refused", refusal.reason, {"detail": refusal.detail})
        log.info("commands.refused", command=refusal.command, reason=refusal.reason, detail=refusal.detail)
        return self._response(
            refusal.command, "refused", refusal.reason, refusal.detail, record_id=record_id, nonce=refusal.nonce
        )

    async def _unrecorded(self, exc: NonceUnrecorded) -> Response | None:
        admitted = self._admitted(exc.key_id, exc.fingerprint, reasons.STATE_UNAVAILABLE)
        await self._write_summaries(self.limiter.due_summaries(self._monotonic()))
        if not admitted:
            self._arm_summary_timer()
            return None
        log.error("commands.nonce_not_recorded", ran=False, command=exc.command, error=exc.reason)
        record_id = await self._record(
            f"command.{exc.command}", f"remote:{exc.key_id}", "failed", reasons.STATE_UNAVAILABLE, {}
        )
        return self._response(
            exc.command,
            "failed",
            reasons.STATE_UNAVAILABLE,
            "the gateway cannot record the nonce",
            record_id=record_id,
            nonce=exc.nonce,
        )

    async def _write_summaries(self, summaries: list[Summary]) -> None:
        for index, summary in enumerate(summaries):
            details: dict[str, str | int | float | bool | None] = {
                "class": summary.refusal_class,
                "suppressed": summary.suppressed,
                **{f"reason.{k}": v for k, v in summary.by_reason.items()},
                "over_s": round(summary.until_s - summary.since_s, 3),
            }
            try:
                await self._record(SUMMARY_EVENT, "agent", "info", None, details)
            except BaseException:
                for unwritten in summaries[index:]:
                    self.limiter.restore(unwritten)
                raise
            log.warning(
                "commands.refusals_suppressed",
                refusal_class=summary.refusal_class,
                suppressed=summary.suppressed,
                **summary.by_reason,
            )

    def _arm_summary_timer(self) -> None:
        if self._summary_timer is None:
            self._summary_timer = asyncio.get_running_loop().create_task(
                self._summaries_when_due(), name="command-refusal-summaries"
            )

    async def _summaries_when_due(self) -> None:
        """Writes each summary when it falls due, also when no refusal comes to write it."""
        try:
            while (due_s := self.limiter.next_summary_s()) is not None:
                await asyncio.sleep(max(due_s - self._monotonic(), 0.0))
                await self._write_summaries(self.limiter.due_summaries(self._monotonic()))
        except Exception:  # the timer task's boundary: the counts were put back for the next try
            log.exception("commands.suppression_summary_failed")
        finally:
            if self._summary_timer is asyncio.current_task():
                self._summary_timer = None

    async def _run(self, verified: Verified) -> Response:
        command = verified.command
        event, actor = f"command.{command}", f"remote:{verified.key_id}"
        details: dict[str, str | int | float | bool | None] = {}
        if command == WRITE_COMMAND:
            details = {
                "device": verified.args.device,
                "point": verified.args.point,
                "value": verified.args.value,
                "operator": verified.operator,
            }
        record_id = await self._record(event, actor, "accepted", None, details)
        ctx = CommandContext(
            command=command,
            args=verified.args,
            actor=actor,
            key_id=verified.key_id,
            operator=verified.operator,
            nonce=verified.envelope.nonce,
        )
        nonce = verified.envelope.nonce
        try:
            async with asyncio.timeout(self.handler_timeout_s):
                result = await self._handlers[command](ctx)
            if command == EXPORT_COMMAND:
                result = _sealed(verified.args, result)
        except CommandFailed as exc:
            await self._record(event, actor, "failed", reasons.HANDLER_ERROR, {**details, "detail": exc.detail})
            return self._response(
                command,
                "failed",
                reasons.HANDLER_ERROR,
                exc.detail,
                result=exc.result,
                record_id=record_id,
                nonce=nonce,
            )
        except TimeoutError:
            await self._record(event, actor, "failed", reasons.TIMEOUT, details)
            return self._response(
                command,
                "failed",
                reasons.TIMEOUT,
                f"no result within {self.handler_timeout_s:g} s",
                record_id=record_id,
                nonce=nonce,
            )
        except Exception as exc:  # the task boundary of a command: answer and audit, keep the traceback
            log.exception("commands.handler_crashed", command=command)
            await self._record(event, actor, "failed", reasons.HANDLER_ERROR, {**details, "error": type(exc).__name__})
            return self._response(
                command,
                "failed",
                reasons.HANDLER_ERROR,
                f"internal error ({type(exc).__name__})",
                record_id=record_id,
                nonce=nonce,
            )
        if command == WRITE_COMMAND and "readback" in result:
            readback = result["readback"]
            if isinstance(readback, int | float | str | bool) or readback is None:
                details = {**details, "readback": readback}
        await self._record(event, actor, "done", None, details)
        return self._response(command, "done", None, None, result=result, record_id=record_id, nonce=nonce)

    async def _record(
        self,
        event: str,
        actor: str,
        outcome: AuditOutcome,
        reason: str | None,
        details: dict[str, str | int | float | bool | None],
    ) -> str | None:
        body = AuditBody(
            event=event, actor=actor, outcome=outcome, reason=reason, details=details, at=iso_utc(self._clock())
        )
        return await self._audit(body)

    def _response(
        self,
        command: str | None,
        outcome: Outcome,
        reason: str | None,
        detail: str | None,
        *,
        result: dict[str, Any] | None = None,
        record_id: str | None = None,
        nonce: str | None = None,
    ) -> Response:
        return Response(
            command=command,
            outcome=outcome,
            reason=reason,
            detail=detail,
            result=result or {},
            record_id=record_id,
            nonce=nonce,
            at=iso_utc(self._clock()),
        )


def _sealed(args: ExportArgs, result: dict[str, Any]) -> dict[str, Any]:
    plaintext = msgspec.json.encode(result)
    recipient = X25519PublicKey.from_public_bytes(b64url_decode(args.recipient))
    return {"format": SEALED_FORMAT, "sealed": b64url_encode(seal(recipient, plaintext)), "bytes": len(plaintext)}
