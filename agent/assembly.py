"""Building the agent's parts from the loaded config, in one place.

:func:`assemble` opens the buffer and builds, in order, the privacy state, the pseudonym keys
and the pipeline, the publisher, the sources, the command processor (when a command key is
pinned) and the status server (not started), and returns them as one frozen :class:`Parts`.
What the config or the keys get wrong stops it with a :class:`StartupError` (exit code 2), and
a buffer it had opened is closed again.

Sources come from :data:`SOURCE_FACTORIES`, keyed by the config's ``type``. Each factory imports
its driver when called: these are the only deferred imports of ``heatgate run``, so that a
gateway without a Modbus source never loads pymodbus, one without a P1 meter never loads
dsmr-parser.

The daemon is not imported here. What the parts need from it (the health fields of the birth
message, connectivity events, the status document) comes through :class:`AgentHooks`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

from heatgate import __version__
from heatgate.agent.command_wiring import WritableDevice, build_processor, command_hook
from heatgate.agent.commands.dispatch import CommandProcessor
from heatgate.agent.commands.errors import CommandError
from heatgate.agent.config import Config, LoadedConfig, SourceConfig
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.policy import Policy, load_policy
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.service_ledger import LEDGER_KEY, ServiceLedger
from heatgate.agent.privacy.state import PrivacyState, PrivacyStateError
from heatgate.agent.publish.publisher import Publisher
from heatgate.agent.status import StatusServer
from heatgate.buffer.adapter import AsyncBuffer, open_buffer
from heatgate.buffer.errors import BufferFault
from heatgate.buffer.keys import load_master_key
from heatgate.drivers.modbus.settings import ModbusRtuOverTcpSource, ModbusRtuSource, ModbusTcpSource
from heatgate.drivers.p1.settings import P1Source
from heatgate.drivers.reading import Source
from heatgate.drivers.zwave.settings import ZwaveSource
from heatgate.drivers.zwavejs.settings import ZwaveJsSource
from heatgate.errors import HeatgateError
from heatgate.logs import get_logger
from heatgate.typedload import ConfigError

__all__ = [
    "SOURCE_FACTORIES",
    "AgentHooks",
    "BuiltSource",
    "Parts",
    "StartupError",
    "assemble",
    "build_source",
    "source_type",
]

log = get_logger("heatgate.assembly")


class StartupError(HeatgateError):
    """The agent cannot start; ``exit_code`` is 2 for bad config/keys, 1 otherwise."""

    def __init__(self, message: str, *, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class AgentHooks(Protocol):
    """What the parts call back into the running agent."""

    def health_fields(self) -> dict[str, Any]:
        """The health summary of the retained birth message."""
        ...

    def on_connectivity(self, event: str, target: str, reason: str | None) -> None:
        """The publisher connected, disconnected or failed to connect."""
        ...

    async def snapshot(self) -> dict[str, Any]:
        """The document ``heatgate status`` (and the ``status`` command) shows."""
        ...


@dataclass(frozen=True, slots=True)
class BuiltSource:
    """One configured source: its driver and the devices ``device.write`` may reach on it."""

    name: str
    type: str
    source: Source
    writable: Mapping[str, WritableDevice] = field(default_factory=lambda: MappingProxyType({}))


SourceFactory = Callable[[SourceConfig, Path | None], BuiltSource]
"""(source config, state dir where a driver keeps what it learned, or None) -> the built source."""


def source_type(config: SourceConfig) -> str:
    """The ``type`` a source has in the config file (``modbus-tcp``, ``p1``, …)."""
    return str(config.__struct_config__.tag)


def _modbus(config: SourceConfig, state_dir: Path | None) -> BuiltSource:
    from heatgate.drivers.modbus.source import make_modbus_source

    if not isinstance(config, ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource):
        raise TypeError(f"not a Modbus source: {config!r}")
    runner = make_modbus_source(config, state_dir=state_dir)
    writable = {name: WritableDevice(device.profile, runner.write_point) for name, device in runner.devices.items()}
    return BuiltSource(config.name, source_type(config), runner, MappingProxyType(writable))


def _p1(config: SourceConfig, state_dir: Path | None) -> BuiltSource:
    from heatgate.drivers.p1.source import P1Runner

    if not isinstance(config, P1Source):
        raise TypeError(f"not a P1 source: {config!r}")
    return BuiltSource(config.name, source_type(config), P1Runner(config))


def _zwave(config: SourceConfig, state_dir: Path | None) -> BuiltSource:
    from heatgate.drivers.zwave.source import ZwaveRunner

    if not isinstance(config, ZwaveSource):
        raise TypeError(f"not a Z-Wave source: {config!r}")
    return BuiltSource(config.name, source_type(config), ZwaveRunner(config))


def _zwavejs(config: SourceConfig, state_dir: Path | None) -> BuiltSource:
    from heatgate.drivers.zwavejs.source import ZwaveJsRunner

    if not isinstance(config, ZwaveJsSource):
        raise TypeError(f"not a Z-Wave JS source: {config!r}")
    return BuiltSource(config.name, source_type(config), ZwaveJsRunner(config))


SOURCE_FACTORIES: Mapping[str, SourceFactory] = MappingProxyType(
    {
        "modbus-tcp": _modbus,
        "modbus-rtu": _modbus,
        "modbus-rtu-over-tcp": _modbus,
        "p1": _p1,
        "zwave": _zwave,
        "zwave-js": _zwavejs,
    }
)
"""Source type -> the factory of its driver (which imports the driver when called)."""


def build_source(config: SourceConfig, *, state_dir: Path | None = None) -> BuiltSource:
    """The driver for one configured source (``state_dir``: where a driver keeps what it learned,
    e.g. the registers a Modbus device refuses; None keeps nothing). Raises
    :class:`heatgate.typedload.ConfigError` for a device profile that does not validate."""
    return SOURCE_FACTORIES[source_type(config)](config, state_dir)


@dataclass(frozen=True, slots=True)
class Parts:
    """Everything ``heatgate run`` runs, built by :func:`assemble`."""

    policy: Policy
    """The policy at start (a reload may adopt another; the daemon keeps the one in force)."""
    buffer: AsyncBuffer
    privacy_state: PrivacyState
    pipeline: Pipeline
    publisher: Publisher
    sources: tuple[BuiltSource, ...]
    commands: CommandProcessor | None
    """None: no command key is pinned, remote commands are disabled."""
    status_server: StatusServer
    """Not started yet."""


async def assemble(loaded: LoadedConfig, hooks: AgentHooks) -> Parts:
    """Build every part from ``loaded``. Raises :class:`StartupError`."""
    config = loaded.config
    try:
        policy = load_policy(config.policy_path)
    except ConfigError as exc:
        raise StartupError(exc.render(), exit_code=2) from None
    buffer = await _open_buffer(config, policy)
    try:
        return await _assemble_over(config, policy, buffer, hooks)
    except BaseException:
        await buffer.close()
        raise


async def _open_buffer(config: Config, policy: Policy) -> AsyncBuffer:
    try:
        master_key = load_master_key(config.master_key_path, config.keys.master_key_credential)
    except BufferFault as exc:
        raise StartupError(str(exc), exit_code=2) from None
    try:
        return await open_buffer(
            config.buffer_path,
            master_key,
            cap_bytes=config.buffer.cap_bytes,
            commit_interval_s=config.buffer.commit_interval_s,
            cipher=config.buffer.cipher,
            retention_s=policy.retention_s(),
        )
    except BufferFault as exc:
        raise StartupError(str(exc), exit_code=2) from None
    finally:
        del master_key


async def _assemble_over(config: Config, policy: Policy, buffer: AsyncBuffer, hooks: AgentHooks) -> Parts:
    privacy_state = await PrivacyState.load(buffer)
    keys = await PseudonymKeys.load(buffer, epoch_days=config.privacy.pseudonym_epoch_days)
    try:
        ledger = ServiceLedger.decode(await buffer.get_state(LEDGER_KEY))
    except PrivacyStateError as exc:
        # What was published is unknown: start afresh (faults and status are published again).
        log.error("assembly.service_ledger_unreadable", reason=exc.reason, kept="an empty ledger")
        ledger = ServiceLedger()
    pipeline = Pipeline(
        policy,
        gateway=config.gateway,
        keys=keys,
        state=privacy_state,
        ledger=ledger,
        late_grace_s=config.privacy.late_grace_s,
    )
    publisher = Publisher(
        config.mqtt,
        config.gateway.id,
        buffer,
        version=__version__,
        health=hooks.health_fields,
        restricted=privacy_state.restricted_streams,
        on_connectivity=hooks.on_connectivity,
    )
    try:
        sources = tuple(build_source(source_config, state_dir=config.state_dir) for source_config in config.sources)
    except ConfigError as exc:
        raise StartupError(exc.render(), exit_code=2) from None
    commands = await _build_commands(config, buffer, privacy_state, pipeline, sources, hooks.snapshot)
    if commands is not None:
        publisher.on_command = command_hook(
            commands,
            publish_raw=publisher.publish_raw,
            wake=publisher.wake,
            response_topic=publisher.response_topic,
        )
    return Parts(
        policy=policy,
        buffer=buffer,
        privacy_state=privacy_state,
        pipeline=pipeline,
        publisher=publisher,
        sources=sources,
        commands=commands,
        status_server=StatusServer(config.status_socket_path, hooks.snapshot),
    )


async def _build_commands(
    config: Config,
    buffer: AsyncBuffer,
    privacy_state: PrivacyState,
    pipeline: Pipeline,
    sources: tuple[BuiltSource, ...],
    snapshot: Callable[[], Awaitable[dict[str, Any]]],
) -> CommandProcessor | None:
    if config.keys.command_public_key_file is None:
        return None
    writable = {name: device for built in sources for name, device in built.writable.items()}
    try:
        return await build_processor(
            gateway_id=config.gateway.id,
            keys=config.keys,
            buffer=buffer,
            privacy_state=privacy_state,
            pipeline=pipeline,
            writable=writable,
            snapshot=snapshot,
        )
    except CommandError as exc:
        raise StartupError(f"remote commands: {exc}", exit_code=2) from None
