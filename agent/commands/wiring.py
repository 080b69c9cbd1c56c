"""Helpers for the daemon to wire the command layer to the rest of the agent.

- :func:`pinned_keys`: key id -> public key from the config's key files;
- :func:`pipeline_audit_sink`: the processor's ``audit`` through the privacy pipeline into the
  buffer's security stream (published on ``…/security/audit``);
- :func:`privacy_handlers`: the ``privacy.*`` commands over :mod:`agent.privacy.rights`;
- :func:`profile_write_bounds` and :func:`device_write_handler`: ``device.write`` over device
  profiles (``writable``/``min``/``max``) and a ``write_point(device, point, value) -> readback``;
- :func:`answer`: handle one message from ``<prefix>/<gw>/cmd/+`` and publish the response.

Typical daemon wiring::

    nonces = await NonceStore.load(buffer)
    verifier = CommandVerifier(gw, pinned_keys([cfg.keys.command_public_key_file]),
                               pinned_keys([cfg.keys.approval_public_key_file]), nonces,
                               write_bounds=profile_write_bounds(profiles_by_device))
    handlers = {"status": status_handler, **privacy_handlers(buffer, state, pipeline),
                "device.write": device_write_handler(modbus.write_point, errors=(ModbusError,))}
    processor = CommandProcessor(verifier, handlers, pipeline_audit_sink(pipeline, buffer))
    publisher.on_command = lambda topic, payload, props: answer(
        processor, publisher.publish_raw, f"{prefix}/{gw}/cmd/response", payload, props)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from heatgate.agent.commands.dispatch import (
    AuditSink,
    CommandContext,
    CommandFailed,
    CommandProcessor,
    Handler,
    Response,
    encode_response,
)
from heatgate.agent.commands.keys import key_id, load_ed25519_public
from heatgate.agent.commands.verify import WriteBounds
from heatgate.agent.payloads import AuditBody
from heatgate.sodium import Ed25519PublicKey

__all__ = [
    "answer",
    "device_write_handler",
    "pinned_keys",
    "pipeline_audit_sink",
    "privacy_handlers",
    "profile_write_bounds",
]


def pinned_keys(paths: Iterable[Path | str | None]) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key for each PEM file given (None entries are skipped).
    Raises :class:`heatgate.agent.commands.keys.CommandKeyFileError`."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        if path is not None:
            key = load_ed25519_public(Path(path))
            keys[key_id(key)] = key
    return keys


class AuditPipeline(Protocol):
    def audit(
        self,
        event: str,
        actor: str,
        outcome: str,
        *,
        reason: str | None = None,
        details: dict[str, str | int | float | bool | None] | None = None,
    ) -> Any: ...


class RecordPutter(Protocol):
    async def put(self, records: Sequence[Any]) -> None: ...


def pipeline_audit_sink(pipeline: AuditPipeline, buffer: RecordPutter) -> AuditSink:
    """``audit`` for :class:`CommandProcessor`: the pipeline makes the security-stream record
    (with its own ``at``), the buffer commits it; returns the record id."""

    async def sink(body: AuditBody) -> str | None:
        record = pipeline.audit(body.event, body.actor, body.outcome, reason=body.reason, details=dict(body.details))
        await buffer.put([record])
        return str(record.id)

    return sink


def privacy_handlers(
    buffer: Any, state: Any, pipeline: Any, export: Callable[[], Awaitable[dict[str, Any]]] | None = None
) -> dict[str, Handler]:
    """Handlers of the ``privacy.*`` commands over :mod:`agent.privacy.rights` (each of which
    commits its own audit record of the change). A request the register refuses becomes a
    ``failed`` response with the register's reason. ``export`` defaults to
    ``rights.export_household(buffer, state, pipeline)``; the processor seals its result."""
    from heatgate.agent.privacy import rights

    def on_stream(apply: Any) -> Handler:
        async def handler(ctx: CommandContext) -> dict[str, Any]:
            try:
                records = await apply(buffer, state, pipeline, ctx.args.stream, ctx.actor)
            except rights.RightsRefused as exc:
                raise CommandFailed(exc.reason) from None
            return _summary(records)

        return handler

    def on_consent(apply: Any) -> Handler:
        async def handler(ctx: CommandContext) -> dict[str, Any]:
            try:
                records = await apply(buffer, state, pipeline, ctx.args.consent, ctx.actor)
            except rights.RightsRefused as exc:
                raise CommandFailed(exc.reason) from None
            return _summary(records)

        return handler

    async def erase(ctx: CommandContext) -> dict[str, Any]:
        try:
            records = await rights.apply_erase(
                buffer, state, pipeline, None if ctx.args.all else ctx.args.stream, ctx.actor
            )
        except rights.RightsRefused as exc:
            raise CommandFailed(exc.reason) from None
        return _summary(records)

    async def do_export(_ctx: CommandContext) -> dict[str, Any]:
        if export is not None:
            return await export()
        document: dict[str, Any] = await rights.export_household(buffer, state, pipeline)
        return document

    return {
        "privacy.object": on_stream(rights.apply_objection),
        "privacy.withdraw_objection": on_stream(rights.apply_withdraw_objection),
        "privacy.restrict": on_stream(rights.apply_restriction),
        "privacy.lift": on_stream(rights.apply_lift),
        "privacy.consent": on_consent(rights.apply_consent),
        "privacy.withdraw_consent": on_consent(rights.apply_withdraw_consent),
        "privacy.erase": erase,
        "privacy.export": do_export,
    }


def _summary(records: Sequence[Any]) -> dict[str, Any]:
    """The change as the audit records put it (details carry no personal data)."""
    from heatgate.agent.payloads import body_decoder

    changes = []
    for record in records:
        body = body_decoder.decode(record.payload)
        if isinstance(body, AuditBody):
            changes.append({"event": body.event, "outcome": body.outcome, **body.details})
    return {"changes": changes, "audit_record_ids": [str(r.id) for r in records]}


class _WritablePoint(Protocol):
    # Read-only members, so that frozen profile points (drivers.modbus.profile.Point) match.
    @property
    def name(self) -> str: ...
    @property
    def writable(self) -> bool: ...
    @property
    def min(self) -> float | None: ...
    @property
    def max(self) -> float | None: ...


class _Profile(Protocol):
    @property
    def points(self) -> Sequence[_WritablePoint]: ...


def profile_write_bounds(profiles_by_device: Mapping[str, _Profile]) -> WriteBounds:
    """``write_bounds(device, point)`` from device profiles: ``(min, max)`` of a point marked
    ``writable`` with both bounds, else None."""
    table: dict[tuple[str, str], tuple[float, float]] = {}
    for device, profile in profiles_by_device.items():
        for point in profile.points:
            if point.writable and point.min is not None and point.max is not None:
                table[(device, point.name)] = (float(point.min), float(point.max))

    def write_bounds(device: str, point: str) -> tuple[float, float] | None:
        return table.get((device, point))

    return write_bounds


def device_write_handler(
    write_point: Callable[[str, str, float], Awaitable[float | int]], *, errors: tuple[type[BaseException], ...]
) -> Handler:
    """``device.write``: write, read back, answer ``{"readback": value}``. The driver's own
    refusals and device errors (``errors``) become a ``failed`` response."""

    async def handler(ctx: CommandContext) -> dict[str, Any]:
        try:
            readback = await write_point(ctx.args.device, ctx.args.point, ctx.args.value)
        except errors as exc:
            raise CommandFailed(f"{type(exc).__name__}: {exc}") from None
        return {"device": ctx.args.device, "point": ctx.args.point, "written": ctx.args.value, "readback": readback}

    return handler


PublishRaw = Callable[..., Awaitable[None]]


async def answer(
    processor: CommandProcessor,
    publish_raw: PublishRaw,
    response_topic: str,
    payload: bytes,
    properties: Mapping[str, Any],
) -> Response | None:
    """Handle one command message and publish its response (QoS 1) on ``response_topic`` with
    the request's correlation data. The response topic is the gateway's own fixed
    ``<prefix>/<gw>/cmd/response``, never the request's (an unauthenticated property could
    otherwise send the answer anywhere the gateway may publish). A refusal past its per-minute
    budget is not answered (None): a flood must not become a flood of responses."""
    correlation = properties.get("correlation_data")
    correlation = bytes(correlation) if isinstance(correlation, bytes | bytearray) else None
    response = await processor.handle(payload, correlation_data=correlation)
    if response is not None:
        await publish_raw(response_topic, encode_response(response), qos=1, correlation_data=correlation)
    return response
