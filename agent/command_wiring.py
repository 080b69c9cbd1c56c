"""The daemon's side of remote commands: the processor built over the agent's parts.

Commands run only when a command key is pinned (``keys.command_public_key_file``); device
writes additionally need the operators' approval key. The agent never writes to a device on
its own: ``device.write`` is reachable only through a verified, approved envelope.

This module knows the parts it is given, never the daemon: :mod:`agent.assembly` calls
:func:`build_processor` and sets the publisher's ``on_command`` to :func:`command_hook`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from heatgate.agent.commands.dispatch import CommandContext, CommandProcessor, Handler
from heatgate.agent.commands.nonces import NonceStore
from heatgate.agent.commands.verify import CommandVerifier
from heatgate.agent.commands.wiring import (
    PublishRaw,
    device_write_handler,
    pinned_keys,
    pipeline_audit_sink,
    privacy_handlers,
    profile_write_bounds,
)
from heatgate.agent.commands.wiring import answer as answer_message
from heatgate.agent.config import KeysConfig
from heatgate.agent.privacy.config_audit import remote_status
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.state import PrivacyState
from heatgate.buffer.api import Buffer
from heatgate.drivers.modbus.errors import ModbusError
from heatgate.drivers.modbus.profile import Profile

__all__ = ["CommandHook", "PointWriter", "Snapshot", "WritableDevice", "build_processor", "command_hook"]

PointWriter = Callable[[str, str, float], Awaitable[float]]
"""``write_point(device, point, value) -> readback``."""
Snapshot = Callable[[], Awaitable[dict[str, Any]]]
"""The document ``heatgate status`` shows (the ``status`` command answers with it)."""
CommandHook = Callable[[str, bytes, dict[str, Any]], Awaitable[None]]
"""The publisher's ``on_command(topic, payload, properties)``."""


@dataclass(frozen=True, slots=True)
class WritableDevice:
    """A device that ``device.write`` may reach: its profile (which points are writable, within
    which bounds) and its source's writer."""

    profile: Profile
    write_point: PointWriter


async def build_processor(
    *,
    gateway_id: str,
    keys: KeysConfig,
    buffer: Buffer,
    privacy_state: PrivacyState,
    pipeline: Pipeline,
    writable: Mapping[str, WritableDevice],
    snapshot: Snapshot,
) -> CommandProcessor:
    """Verifier (pinned keys, persisted nonces, profile bounds), handlers, audit sink. Raises
    :class:`agent.commands.errors.CommandError` (a key file or the nonce store unreadable)."""
    nonces = await NonceStore.load(buffer)
    verifier = CommandVerifier(
        gateway_id,
        pinned_keys([keys.command_public_key_file]),
        pinned_keys([keys.approval_public_key_file]),
        nonces,
        write_bounds=profile_write_bounds({name: device.profile for name, device in writable.items()}),
    )

    async def write_point(device: str, point: str, value: float) -> float:
        target = writable.get(device)
        if target is None:
            raise ModbusError(f"no Modbus device named {device!r} on this gateway")
        return await target.write_point(device, point, value)

    async def status(_ctx: CommandContext) -> dict[str, Any]:
        return remote_status(await snapshot())

    handlers: Mapping[str, Handler] = {
        "status": status,
        **privacy_handlers(buffer, privacy_state, pipeline),
        "device.write": device_write_handler(write_point, errors=(ModbusError,)),
    }
    return CommandProcessor(verifier, handlers, pipeline_audit_sink(pipeline, buffer))


def command_hook(
    processor: CommandProcessor, *, publish_raw: PublishRaw, wake: Callable[[], None], response_topic: str
) -> CommandHook:
    """The publisher's ``on_command``: handle one message from ``<prefix>/<gw>/cmd/<name>`` and
    respond on ``response_topic`` (the gateway's own ``…/cmd/response``); then ``wake`` the
    publisher for the audit records (or a summary) just committed."""

    async def on_command(_topic: str, payload: bytes, properties: dict[str, Any]) -> None:
        await answer_message(processor, publish_raw, response_topic, payload, properties)
        wake()

    return on_command
