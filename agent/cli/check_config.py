"""``heatgate check-config``: validate a config file and summarise it on one screen."""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from heatgate.agent.cli.common import add_config_option, print_config_error
from heatgate.agent.cli.console import output_console
from heatgate.agent.config import (
    Config,
    LoadedConfig,
    ModbusRtuOverTcpSource,
    ModbusRtuSource,
    ModbusTcpSource,
    P1Source,
    SourceConfig,
    ZwaveSource,
    to_builtins,
)
from heatgate.agent.privacy.device_types import DeviceTypeRules
from heatgate.agent.privacy.policy import UNLISTED, Policy
from heatgate.typedload import ConfigError, Issue

HELP = "validate a configuration file (exit 0, or 2 with every problem located)"
DESCRIPTION = """\
Reads the configuration file, checks every value against its type and range, rejects unknown
keys (a typo must not pass silently), checks references across entries (duplicate names,
unknown device profiles) and the privacy policy it names, and prints a one-screen summary: the
gateway, the broker, the sources, and the rule of the privacy policy that each device type of the
sources falls under (a device type the policy does not list gets the most restrictive one).

On any problem it prints every one of them, each with its location in the file, for example:
  /etc/heatgate/heatgate.toml: sources[1].devices[0].unit_id: expected int <= 247, got 300
and exits with status 2. Nothing is written and no device or broker is contacted.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "check-config",
        help=HELP,
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print the validated config as JSON")
    parser.add_argument(
        "--offline",
        action="store_true",
        help="check the file only, not what it names on this machine (for a config checked before it is shipped)",
    )
    parser.set_defaults(handler=run)


@dataclass(frozen=True)
class Checked:
    """A config that passed, with its policy."""

    loaded: LoadedConfig
    policy: Policy


def check(path: Path, *, offline: bool) -> Checked | ConfigError:
    """Every problem of the config at ``path`` in one pass: its syntax, types and references
    across entries, the privacy policy it names, and (unless ``offline``) what it names on this
    machine; or the config and its policy when there is none."""
    from heatgate.agent.config import in_file_order, load_config
    from heatgate.agent.config_machine import machine_issues, missing_profile_files
    from heatgate.typedload import convert, load_toml

    try:
        data = load_toml(path)  # syntax: nothing else can be checked without it
    except ConfigError as exc:
        return exc
    issues: list[Issue] = []
    loaded: LoadedConfig | None = None
    try:
        loaded = load_config(path)
    except ConfigError as exc:
        issues.extend(exc.issues)
    # A profile named by a path absent here is a machine problem (reported below, or accepted
    # offline), not the file's: the settings' own "file not found" for it is replaced.
    absent_profiles = {where for where, _ in missing_profile_files(data)}
    issues = [issue for issue in issues if issue.path not in absent_profiles]
    policy, policy_issues = _policy(data, offline=offline)
    issues.extend(policy_issues)
    if not offline:
        issues.extend(machine_issues(data))
    if issues:
        return ConfigError(str(path), in_file_order(issues))
    if loaded is None:  # its only problems were profiles absent here, accepted offline
        config = convert(data, Config, source=str(path))
        loaded = LoadedConfig(config=config, path=path, sha256=hashlib.sha256(path.read_bytes()).hexdigest())
    assert policy is not None, "a policy that did not load has issues"
    return Checked(loaded, policy)


def _policy(data: dict[str, Any], *, offline: bool) -> tuple[Policy | None, list[Issue]]:
    """The privacy policy the config names (or the shipped one), and its problems located under
    ``privacy.policy_file``. A named file that is absent here is left to the machine checks."""
    from heatgate.agent.privacy.policy import load_policy
    from heatgate.config import data_path

    privacy = data.get("privacy")
    named = privacy.get("policy_file") if isinstance(privacy, dict) else None
    if named is not None and not (isinstance(named, str) and named.startswith("/")):
        return None, []  # reported by type
    path = Path(named) if named else data_path("privacy.toml")
    if named and not path.exists():
        return None, []
    try:
        return load_policy(path), []
    except ConfigError as exc:
        return None, [Issue("privacy.policy_file", f"{exc.source}: {issue}") for issue in exc.issues]


def run(args: argparse.Namespace) -> int:
    from heatgate.agent.privacy.device_types import device_type_report

    outcome = check(args.config, offline=args.offline)
    if isinstance(outcome, ConfigError):
        print_config_error(outcome)
        return 2
    loaded = outcome.loaded
    report = device_type_report(outcome.policy, loaded.config.sources)
    if args.json:
        document = {
            "config": to_builtins(loaded.config),
            "sha256": loaded.sha256,
            "device_types": {
                r.device_type: {"listed": r.listed, "from": r.producers, "rules": r.rules} for r in report
            },
        }
        json.dump(document, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    console = output_console()
    _summary(loaded.config, str(args.config), console)
    if args.offline:
        console.print("[yellow]offline[/]: the files, serial ports and state directory it names were not checked")
    print_device_types(report, console)
    return 0


def print_device_types(report: list[DeviceTypeRules], console: Console) -> None:
    """The privacy rule each device type of the sources falls under, per stream."""
    table = Table(title="device types and their privacy rules", title_justify="left")
    table.add_column("device type")
    table.add_column("from")
    table.add_column("rules")
    for entry in report:
        name = entry.device_type if entry.listed else f"[bold yellow]{entry.device_type}[/] ({UNLISTED})"
        rules = "\n".join(f"{stream}: {rule}" for stream, rule in entry.rules.items())
        table.add_row(name, ", ".join(entry.producers), rules)
    console.print(table)


def _devices(source: ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource) -> str:
    return ", ".join(f"{d.name} (unit {d.unit_id}, {d.profile}, every {d.interval_s:g} s)" for d in source.devices)


def _source_detail(source: SourceConfig) -> tuple[str, str]:
    if isinstance(source, ModbusTcpSource):
        return f"{source.host}:{source.port}", _devices(source)
    if isinstance(source, ModbusRtuOverTcpSource):
        return f"rtu://{source.host}:{source.port}", _devices(source)
    if isinstance(source, ModbusRtuSource):
        return f"{source.port} {source.baudrate} 8{source.parity}{source.stopbits}", _devices(source)
    if isinstance(source, P1Source):
        return source.port, f"DSMR {source.dsmr_version}"
    if isinstance(source, ZwaveSource):
        nodes = ", ".join(f"{n.name} (node {n.node_id})" for n in source.nodes) or "all nodes"
        return source.port, nodes
    raise AssertionError(source)


def _summary(config: Config, path: str, console: Console) -> None:
    console.print(f"[bold green]ok[/]: {path} is valid")
    gateway = config.gateway
    console.print(f"gateway  [bold]{gateway.id}[/]  region {gateway.region}  state {gateway.state_dir}")
    mqtt = config.mqtt
    tls = "mutual TLS" if mqtt.cert_file else ("TLS" if mqtt.tls else "plain (loopback only)")
    console.print(
        f"broker   {mqtt.host}:{mqtt.port}  MQTT {mqtt.protocol}  {tls}  prefix {mqtt.topic_prefix}/{gateway.id}"
    )
    console.print(
        f"buffer   {config.buffer_path}  cap {config.buffer.cap_bytes / 2**20:.0f} MiB  "
        f"{config.buffer.cipher}  commit every {config.buffer.commit_interval_s:g} s"
    )
    console.print(f"policy   {config.policy_path}")
    table = Table(title=f"{len(config.sources)} source(s)", title_justify="left")
    table.add_column("name")
    table.add_column("type")
    table.add_column("where")
    table.add_column("devices")
    for source in config.sources:
        where, devices = _source_detail(source)
        table.add_row(source.name, source.__struct_config__.tag, where, devices)  # type: ignore[arg-type]
    console.print(table)
