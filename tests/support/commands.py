"""Shared set-up for the command tests: keys, a clock, a verifier and a processor whose audit
sink keeps every record."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from heatgate.agent.commands.dispatch import CommandContext, CommandFailed, CommandProcessor, Handler, Response
from heatgate.agent.commands.keys import key_id
from heatgate.agent.commands.limiter import DEFAULT_UNVERIFIED_PER_MIN, DEFAULT_VERIFIED_PER_MIN
from heatgate.agent.commands.nonces import NonceStore, StateStore
from heatgate.agent.commands.verify import CommandVerifier
from heatgate.agent.payloads import AuditBody

GATEWAY = "gw-test-0001"
NOW_S = 1_714_567_800
BOUNDS = {("heatpump", "flow_setpoint"): (20.0, 60.0)}


def write_bounds(device: str, point: str) -> tuple[float, float] | None:
    return BOUNDS.get((device, point))


class Clock:
    def __init__(self, now_s: float = NOW_S) -> None:
        self.now_s = now_s

    def __call__(self) -> float:
        # always a float: the buffer binds created_s into its AEAD data and an int does not
        # round-trip through SQLite's REAL column as the same msgpack value
        return float(self.now_s)


@dataclass
class Keys:
    command: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    approval: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    stranger: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)

    def command_keys(self) -> dict[str, Any]:
        return {key_id(self.command.public_key()): self.command.public_key()}

    def approval_keys(self) -> dict[str, Any]:
        return {key_id(self.approval.public_key()): self.approval.public_key()}


class AuditLog:
    def __init__(self) -> None:
        self.records: list[AuditBody] = []

    async def __call__(self, body: AuditBody) -> str:
        self.records.append(body)
        return f"rec-{len(self.records)}"


class Calls:
    """Handlers that record what they were called with."""

    def __init__(self) -> None:
        self.calls: list[CommandContext] = []
        self.setpoint: float = 40.0

    async def status(self, ctx: CommandContext) -> dict[str, Any]:
        self.calls.append(ctx)
        return {"healthy": True}

    async def privacy(self, ctx: CommandContext) -> dict[str, Any]:
        self.calls.append(ctx)
        if getattr(ctx.args, "stream", None) == "service" and ctx.command == "privacy.object":
            raise CommandFailed("the service stream is not objectable")
        return {"changed": True}

    async def export(self, ctx: CommandContext) -> dict[str, Any]:
        self.calls.append(ctx)
        return {"records": [{"stream": "telemetry", "value": 21.5}], "register": {"streams": 5}}

    async def write(self, ctx: CommandContext) -> dict[str, Any]:
        self.calls.append(ctx)
        self.setpoint = float(ctx.args.value)
        return {"readback": self.setpoint}

    def handlers(self) -> dict[str, Handler]:
        privacy = self.privacy
        return {
            "status": self.status,
            "privacy.object": privacy,
            "privacy.withdraw_objection": privacy,
            "privacy.restrict": privacy,
            "privacy.lift": privacy,
            "privacy.consent": privacy,
            "privacy.withdraw_consent": privacy,
            "privacy.erase": privacy,
            "privacy.export": self.export,
            "device.write": self.write,
        }


async def make_processor(
    state: StateStore,
    keys: Keys,
    clock: Clock,
    *,
    calls: Calls | None = None,
    audit: AuditLog | None = None,
    max_entries: int = 4096,
    unverified_per_min: int = DEFAULT_UNVERIFIED_PER_MIN,
    verified_per_min: int = DEFAULT_VERIFIED_PER_MIN,
    **verifier_options: Any,
) -> tuple[CommandProcessor, Calls, AuditLog, NonceStore]:
    nonces = await NonceStore.load(state, clock=clock, max_entries=max_entries)
    verifier = CommandVerifier(
        GATEWAY,
        keys.command_keys(),
        keys.approval_keys(),
        nonces,
        clock=clock,
        write_bounds=write_bounds,
        **verifier_options,
    )
    calls = calls or Calls()
    audit = audit or AuditLog()
    processor = CommandProcessor(
        verifier,
        calls.handlers(),
        audit,
        clock=clock,
        monotonic=clock,
        unverified_per_min=unverified_per_min,
        verified_per_min=verified_per_min,
    )
    return processor, calls, audit, nonces


async def answered(processor: CommandProcessor, raw: bytes) -> Response:
    """``processor.handle(raw)`` for an envelope that must be answered (not suppressed by a budget)."""
    response = await processor.handle(raw)
    assert response is not None, "the refusal was suppressed"
    return response
