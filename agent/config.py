"""The agent's configuration: typed, frozen, validated once at load.

Every name carries its unit (``interval_s``, ``cap_bytes``). Unknown keys are errors, so that
a typo never passes silently. :func:`load_config` reports every problem at once, located by
path and file (see :mod:`agent.typedload`).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta, Struct

from heatgate.typedload import ABSOLUTE_PATH, ConfigError, Issue, convert, load_toml

__all__ = [
    "BufferConfig",
    "Config",
    "ConfigError",
    "GatewayConfig",
    "KeysConfig",
    "ModbusDevice",
    "ModbusRtuSource",
    "ModbusTcpSource",
    "MqttConfig",
    "P1Source",
    "PrivacyConfig",
    "SourceConfig",
    "StatusConfig",
    "ZwaveNode",
    "ZwaveSource",
    "load_config",
]

AbsPath = Annotated[str, ABSOLUTE_PATH]
Name = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$", description="lowercase name")]
# No '.', '/', '+', '#': the id is a topic level, and NATS's MQTT listener maps '/' to '.'
# (a dot in a topic closes the connection there).
GatewayId = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$", description="gateway id: letters, digits, '-', '_'")
]
PositiveSeconds = Annotated[float, Meta(gt=0, le=86400)]
TcpPort = Annotated[int, Meta(ge=1, le=65535)]


class _Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every config table: frozen, keyword-only, unknown keys rejected."""


class GatewayConfig(_Section, frozen=True, kw_only=True):
    id: GatewayId
    """Gateway identity; the subject of its client certificate. Carries no customer data."""
    region: Annotated[str, Meta(min_length=2, max_length=16)]
    """Where the gateway is: a Dutch postcode or a region code. Analytics sees only its region."""
    state_dir: AbsPath = "/var/lib/heatgate"
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "Europe/Amsterdam"
    """IANA time zone of the household: aggregation windows of a day are its calendar days."""

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            known = "an IANA name such as Europe/Amsterdam"
            raise ValueError(f"timezone: unknown time zone {self.timezone!r} ({known})") from None


class MqttConfig(_Section, frozen=True, kw_only=True):
    url: str = "mqtts://localhost:8883"
    ca_file: AbsPath | None = None
    cert_file: AbsPath | None = None
    key_file: AbsPath | None = None
    username: str | None = None
    password_file: AbsPath | None = None
    client_id: str | None = None
    topic_prefix: Annotated[str, Meta(pattern=r"^[^#+]+[^/#+]$")] = "heatgate/v1"
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive_s: Annotated[int, Meta(ge=5, le=3600)] = 60
    session_expiry_s: Annotated[int, Meta(ge=0, le=4294967295)] = 7 * 86400
    inflight_max: Annotated[int, Meta(ge=1, le=1000)] = 32
    max_payload_bytes: Annotated[int, Meta(ge=1024, le=268435455)] = 64 * 1024
    reconnect_min_s: Annotated[float, Meta(gt=0, le=60)] = 1.0
    reconnect_max_s: Annotated[float, Meta(gt=0, le=3600)] = 300.0
    puback_timeout_s: Annotated[float, Meta(gt=0, le=3600)] = 30.0
    """A QoS 1 message unacknowledged for this long means the connection is dead: it is
    dropped (the broker publishes the will) and everything in flight goes again."""

    def __post_init__(self) -> None:
        parts = urlsplit(self.url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise ValueError(f"url: scheme must be mqtts:// (or mqtt:// on loopback), got {self.url!r}")
        if not parts.hostname:
            raise ValueError(f"url: no host in {self.url!r}")
        if parts.scheme == "mqtt" and not is_loopback(parts.hostname):
            raise ValueError(f"url: plain mqtt:// is allowed only to a loopback broker, got host {parts.hostname!r}")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file: give both cert_file and key_file (mutual TLS), or neither")
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError("reconnect_max_s: must be >= reconnect_min_s")

    @property
    def tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "localhost"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or (8883 if self.tls else 1883)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class KeysConfig(_Section, frozen=True, kw_only=True):
    master_key_file: AbsPath | None = None
    """Default: ``<state_dir>/keys/master.key``. Must be readable by the service user only."""
    master_key_credential: str = "heatgate-master-key"
    """Name of the systemd credential (``$CREDENTIALS_DIRECTORY``) preferred over the file."""
    command_public_key_file: AbsPath | None = None
    """The backend's Ed25519 command-verification key, pinned at provisioning."""
    approval_public_key_file: AbsPath | None = None
    """The operators' Ed25519 approval key for device writes, distinct from the command key."""


class BufferConfig(_Section, frozen=True, kw_only=True):
    path: AbsPath | None = None
    """Default: ``<state_dir>/buffer.db``."""
    cap_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 256 * 1024 * 1024
    commit_interval_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    cipher: Literal["chacha20-poly1305", "aes-256-gcm"] = "chacha20-poly1305"
    sweep_interval_s: Annotated[float, Meta(gt=0, le=86400)] = 300.0


class PrivacyConfig(_Section, frozen=True, kw_only=True):
    policy_file: AbsPath | None = None
    """Default: the shipped ``config/privacy.toml``."""
    pseudonym_epoch_days: Annotated[int, Meta(ge=1, le=3650)] = 90


class StatusConfig(_Section, frozen=True, kw_only=True):
    socket_path: AbsPath | None = None
    """Default: ``<state_dir>/status.sock`` (mode 0600)."""


class ModbusDevice(_Section, frozen=True, kw_only=True):
    name: Name
    unit_id: Annotated[int, Meta(ge=0, le=247)]
    profile: Annotated[str, Meta(min_length=1)]
    """A shipped profile name (``sim-heatpump``) or an absolute path to a profile file."""
    interval_s: PositiveSeconds = 10.0


class _Source(_Section, tag_field="type", frozen=True, kw_only=True):
    name: Name


class ModbusTcpSource(_Source, tag="modbus-tcp", frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: TcpPort = 502
    timeout_s: PositiveSeconds = 1.0
    devices: Annotated[list[ModbusDevice], Meta(min_length=1)]


class ModbusRtuSource(_Source, tag="modbus-rtu", frozen=True, kw_only=True):
    port: AbsPath
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: PositiveSeconds = 0.5
    devices: Annotated[list[ModbusDevice], Meta(min_length=1)]


class P1Source(_Source, tag="p1", frozen=True, kw_only=True):
    port: AbsPath
    dsmr_version: Literal["2.2", "3", "4", "5", "5B", "5L", "5S"] = "5"
    serial_settings: Literal["8N1", "7E1"] | None = None
    """Default follows the version: 7E1 at 9600 baud for 2.2/3, 8N1 at 115200 for 4 and 5."""


class ZwaveNode(_Section, frozen=True, kw_only=True):
    node_id: Annotated[int, Meta(ge=1, le=232)]
    name: Name
    device_type: Name = "zwave-sensor"


class ZwaveSource(_Source, tag="zwave", frozen=True, kw_only=True):
    port: AbsPath
    nodes: list[ZwaveNode] = []


SourceConfig = ModbusTcpSource | ModbusRtuSource | P1Source | ZwaveSource


class Config(_Section, frozen=True, kw_only=True):
    gateway: GatewayConfig
    mqtt: MqttConfig = MqttConfig()
    keys: KeysConfig = KeysConfig()
    buffer: BufferConfig = BufferConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    status: StatusConfig = StatusConfig()
    sources: list[SourceConfig] = []

    # Resolved defaults that depend on the state directory.
    @property
    def state_dir(self) -> Path:
        return Path(self.gateway.state_dir)

    @property
    def buffer_path(self) -> Path:
        return Path(self.buffer.path) if self.buffer.path else self.state_dir / "buffer.db"

    @property
    def master_key_path(self) -> Path:
        if self.keys.master_key_file:
            return Path(self.keys.master_key_file)
        return self.state_dir / "keys" / "master.key"

    @property
    def status_socket_path(self) -> Path:
        if self.status.socket_path:
            return Path(self.status.socket_path)
        return self.state_dir / "status.sock"

    @property
    def policy_path(self) -> Path:
        if self.privacy.policy_file:
            return Path(self.privacy.policy_file)
        from heatgate.config import data_path

        return data_path("privacy.toml")


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config and where it came from (``sha256``: for local display only; the audit
    log records which keys changed, see :mod:`agent.privacy.config_audit`)."""

    config: Config
    path: Path
    sha256: str


def load_config(path: Path) -> LoadedConfig:
    """Load and validate a config file; raise ConfigError with every problem located."""
    import hashlib

    data = load_toml(path)
    config = convert(data, Config, source=str(path))
    issues = _semantic_issues(config)
    if issues:
        raise ConfigError(str(path), issues)
    return LoadedConfig(config=config, path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def _semantic_issues(config: Config) -> list[Issue]:
    """Checks across entries that a type alone cannot express."""
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    for index, source in enumerate(config.sources):
        if source.name in seen:
            issues.append(
                Issue(
                    f"sources[{index}].name",
                    f"duplicate source name {source.name!r} (also sources[{seen[source.name]}])",
                )
            )
        else:
            seen[source.name] = index
        if isinstance(source, ModbusTcpSource | ModbusRtuSource):
            units: dict[int, int] = {}
            names: dict[str, int] = {}
            for dev_index, device in enumerate(source.devices):
                where = f"sources[{index}].devices[{dev_index}]"
                if device.unit_id in units:
                    issues.append(Issue(f"{where}.unit_id", f"duplicate unit id {device.unit_id} on this bus"))
                units.setdefault(device.unit_id, dev_index)
                if device.name in names:
                    issues.append(Issue(f"{where}.name", f"duplicate device name {device.name!r}"))
                names.setdefault(device.name, dev_index)
                issues.extend(_profile_issues(device.profile, f"{where}.profile"))
        if isinstance(source, ZwaveSource):
            node_ids: set[int] = set()
            for node_index, node in enumerate(source.nodes):
                if node.node_id in node_ids:
                    issues.append(
                        Issue(f"sources[{index}].nodes[{node_index}].node_id", f"duplicate node id {node.node_id}")
                    )
                node_ids.add(node.node_id)
    return issues


def _profile_issues(profile: str, where: str) -> list[Issue]:
    """Load the device's profile fully; its problems located under ``where``, e.g.
    ``sources[0].devices[0].profile: /…/x.toml: points[2].type: …``."""
    from heatgate.drivers.modbus.profile import load_profile

    try:
        load_profile(profile)
    except ConfigError as exc:
        if exc.source == profile and len(exc.issues) == 1 and not exc.issues[0].path:
            return [Issue(where, exc.issues[0].message)]  # not found / not a name
        return [Issue(where, f"{exc.source}: {issue}") for issue in exc.issues]
    return []


def to_builtins(config: Config) -> dict[str, object]:
    """Plain data form of a config (for ``--json`` output)."""
    result = msgspec.to_builtins(config)
    assert isinstance(result, dict)
    return result
