"""The agent's configuration: typed, frozen, validated once at load.

Every name carries its unit (``interval_s``, ``cap_bytes``). Unknown keys are errors, so that
a typo never passes silently. :func:`load_config` reports every problem at once, located by
path and file (see :mod:`heatgate.typedload`).

Each driver owns the settings of its sources (``heatgate.drivers.<driver>.settings``) and their
checks; this module composes them into :class:`Config` (``sources`` is the union tagged by
``type``) and keeps only what is the agent's own.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import urlsplit

import msgspec
from msgspec import Meta

from heatgate.config import data_path
from heatgate.drivers.modbus.settings import ModbusDevice, ModbusRtuOverTcpSource, ModbusRtuSource, ModbusTcpSource
from heatgate.drivers.p1.settings import P1Source
from heatgate.drivers.zwave.settings import ZwaveNode, ZwaveSource
from heatgate.drivers.zwavejs.settings import ZwaveJsNode, ZwaveJsSource
from heatgate.settings import AbsPath, Section
from heatgate.typedload import ConfigError, Issue, convert, load_toml

__all__ = [
    "BufferConfig",
    "Config",
    "ConfigError",
    "GatewayConfig",
    "KeysConfig",
    "LoadedConfig",
    "ModbusDevice",
    "ModbusRtuOverTcpSource",
    "ModbusRtuSource",
    "ModbusTcpSource",
    "MqttConfig",
    "P1Source",
    "PrivacyConfig",
    "SourceConfig",
    "StatusConfig",
    "ZwaveJsNode",
    "ZwaveJsSource",
    "ZwaveNode",
    "ZwaveSource",
    "in_file_order",
    "load_config",
]

# No '.', '/', '+', '#': the id is a topic level, and NATS's MQTT listener maps '/' to '.'
# (a dot in a topic closes the connection there).
GatewayId = Annotated[
    str,
    Meta(
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{2,63}$",
        description="a gateway id of 3 to 64 characters: letters, digits, '-' and '_', starting with a letter or digit",
    ),
]


class GatewayConfig(Section, frozen=True, kw_only=True):
    id: GatewayId
    """Gateway identity; the subject of its client certificate. Carries no customer data."""
    region: Annotated[str, Meta(min_length=2, max_length=16)]
    """Where the gateway is: a Dutch postcode or a region code. Analytics sees only its region."""
    state_dir: AbsPath = "/var/lib/heatgate"
    timezone: Annotated[str, Meta(min_length=1, max_length=64)] = "Europe/Amsterdam"
    """IANA time zone of the household: aggregation windows of a day are its calendar days."""
    unavailable_after_s: Annotated[float, Meta(ge=1, le=86400)] = 300.0
    """A source or device not answering this long (without a break) is published as a service
    status record ``availability: unavailable`` (and ``available`` when it answers again)."""

    def __post_init__(self) -> None:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            known = "an IANA name such as Europe/Amsterdam"
            raise ValueError(f"timezone: unknown time zone {self.timezone!r} ({known})") from None


class MqttConfig(Section, frozen=True, kw_only=True):
    url: str = "mqtts://localhost:8883"
    ca_file: AbsPath | None = None
    cert_file: AbsPath | None = None
    key_file: AbsPath | None = None
    username: str | None = None
    password_file: AbsPath | None = None
    client_id: str | None = None
    topic_prefix: Annotated[
        str,
        Meta(
            pattern=r"^[^#+]+[^/#+]$",
            description="a topic prefix of 2 or more characters, without '+' or '#', not ending in '/'",
        ),
    ] = "heatgate/v1"
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


class KeysConfig(Section, frozen=True, kw_only=True):
    master_key_file: AbsPath | None = None
    """Default: ``<state_dir>/keys/master.key``. Must be readable by the service user only."""
    master_key_credential: str = "heatgate-master-key"
    """Name of the systemd credential (``$CREDENTIALS_DIRECTORY``) preferred over the file."""
    command_public_key_file: AbsPath | None = None
    """The backend's Ed25519 command-verification key, pinned at provisioning."""
    approval_public_key_file: AbsPath | None = None
    """The operators' Ed25519 approval key for device writes, distinct from the command key."""


class BufferConfig(Section, frozen=True, kw_only=True):
    path: AbsPath | None = None
    """Default: ``<state_dir>/buffer.db``."""
    cap_bytes: Annotated[int, Meta(ge=1024 * 1024)] = 256 * 1024 * 1024
    commit_interval_s: Annotated[float, Meta(ge=0, le=60)] = 1.0
    cipher: Literal["chacha20-poly1305", "aes-256-gcm"] = "chacha20-poly1305"
    sweep_interval_s: Annotated[float, Meta(gt=0, le=86400)] = 300.0


class PrivacyConfig(Section, frozen=True, kw_only=True):
    policy_file: AbsPath | None = None
    """Default: the shipped ``config/privacy.toml``."""
    pseudonym_epoch_days: Annotated[int, Meta(ge=1, le=3650)] = 90
    late_grace_s: Annotated[float, Meta(ge=0, le=3600)] = 60.0
    """How long after its end an aggregation window waits for late readings (at most a quarter
    of the window); later ones go into the next window, counted as ``late``."""


class StatusConfig(Section, frozen=True, kw_only=True):
    socket_path: AbsPath | None = None
    """Default: ``<state_dir>/status.sock`` (mode 0600)."""


SourceConfig = ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource | P1Source | ZwaveSource | ZwaveJsSource


class Config(Section, frozen=True, kw_only=True):
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
        return data_path("privacy.toml")


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config and where it came from (``sha256``: for local display only; the audit
    log records which keys changed, see :mod:`agent.privacy.config_audit`)."""

    config: Config
    path: Path
    sha256: str


def load_config(path: Path) -> LoadedConfig:
    """Load and validate a config file; raise ConfigError with every problem located: the
    checks across entries run on every source that is valid by itself, even when other parts
    of the file are not, so that one run shows them all."""
    data = load_toml(path)
    try:
        config = convert(data, Config, source=str(path))
    except ConfigError as exc:
        raise ConfigError(str(path), in_file_order([*exc.issues, *_source_issues(data.get("sources"))])) from None
    issues = _source_issues(data.get("sources"))
    if issues:
        raise ConfigError(str(path), issues)
    return LoadedConfig(config=config, path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())


def in_file_order(issues: list[Issue]) -> list[Issue]:
    """Issues sorted as the file is laid out: the tables in the order of :class:`Config`, then
    the sources by index (stable within each)."""
    tables = list(msgspec.structs.fields(Config))
    names = [field.encode_name for field in tables]

    def key(issue: Issue) -> tuple[int, int]:
        match = re.match(r"([A-Za-z_]+)(?:\[(\d+)\])?", issue.path)
        if match is None:
            return (-1, 0)
        table = match.group(1)
        return (names.index(table) if table in names else -1, int(match.group(2) or 0))

    return sorted(issues, key=key)


def _source_issues(entries: object) -> list[Issue]:
    """Checks across entries that a type alone cannot express: source names unique here, the
    rest by each source's own settings (:meth:`heatgate.settings.SourceSettings.issues`), for
    every ``[[sources]]`` entry that is valid by itself (the others are reported by type)."""
    if not isinstance(entries, list):
        return []
    issues: list[Issue] = []
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        name = entry.get("name") if isinstance(entry, dict) else None
        if isinstance(name, str):
            if name in seen:
                issues.append(
                    Issue(f"sources[{index}].name", f"duplicate source name {name!r} (also sources[{seen[name]}])")
                )
            else:
                seen[name] = index
        try:
            source: SourceConfig = msgspec.convert(entry, SourceConfig, strict=False)
        except msgspec.ValidationError:
            continue
        issues.extend(source.issues(f"sources[{index}]"))
    return issues


def to_builtins(config: Config) -> dict[str, object]:
    """Plain data form of a config (for ``--json`` output)."""
    result = msgspec.to_builtins(config)
    assert isinstance(result, dict)
    return result
