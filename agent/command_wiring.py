"""The daemon's side of remote commands: the processor built over this agent's parts.

Commands run only when a command key is pinned (``keys.command_public_key_file``); device
writes additionally need the operators' approval key. The agent never writes to a device on
its own: ``device.write`` is reachable only through a verified, approved envelope.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from heatgate.agent.commands.dispatch import CommandContext, CommandProcessor, Handler
from heatgate.agent.commands.nonces import NonceStore
from heatgate.agent.commands.verify import CommandVerifier
from heatgate.agent.commands.wiring import (
    answer as answer_message,
)
from heatgate.agent.commands.wiring import (
    device_write_handler,
    pinned_keys,
    pipeline_audit_sink,
    privacy_handlers,
    profile_write_bounds,
)

if TYPE_CHECKING:
    from heatgate.agent.daemon import Agent

__all__ = ["answer", "build_processor"]


async def build_processor(agent: Agent) -> CommandProcessor:
    """Verifier (pinned keys, persisted nonces, profile bounds), handlers, audit sink."""
    from heatgate.drivers.modbus.errors import ModbusError
    from heatgate.drivers.modbus.source import ModbusBusRunner

    config = agent.config
    nonces = await NonceStore.load(agent.buffer)
    writers: dict[str, Callable[[str, str, float], Awaitable[float]]] = {}
    profiles: dict[str, Any] = {}
    for slot in agent.sources.values():
        if isinstance(slot, ModbusBusRunner):
            for name, device in slot.devices.items():
                writers[name] = slot.write_point
                profiles[name] = device.profile
    verifier = CommandVerifier(
        config.gateway.id,
        pinned_keys([config.keys.command_public_key_file]),
        pinned_keys([config.keys.approval_public_key_file]),
        nonces,
        write_bounds=profile_write_bounds(profiles),
    )

    async def write_point(device: str, point: str, value: float) -> float:
        writer = writers.get(device)
        if writer is None:
            raise ModbusError(f"no Modbus device named {device!r} on this gateway")
        return await writer(device, point, value)

    async def status(_ctx: CommandContext) -> dict[str, Any]:
        from heatgate.agent.privacy.config_audit import remote_status

        return remote_status(await agent.snapshot())

    handlers: Mapping[str, Handler] = {
        "status": status,
        **privacy_handlers(agent.buffer, agent.privacy_state, agent.pipeline),
        "device.write": device_write_handler(write_point, errors=(ModbusError,)),
    }
    return CommandProcessor(verifier, handlers, pipeline_audit_sink(agent.pipeline, agent.buffer))


async def answer(agent: Agent, topic: str, payload: bytes, properties: dict[str, Any]) -> None:
    """Handle one message from ``<prefix>/<gw>/cmd/<name>``; respond on ``…/cmd/response``."""
    prefix = agent.config.mqtt.topic_prefix
    response_topic = f"{prefix}/{agent.config.gateway.id}/cmd/response"
    await answer_message(agent.commands, agent.publisher.publish_raw, response_topic, payload, properties)
    agent.publisher.wake()  # the audit records (or a summary) just committed
