"""Settings of the Modbus sources (``modbus-tcp``, ``modbus-rtu``) and their devices.

The agent composes these into its config; the checks across entries (unit ids and names unique
on a bus, every device's profile loadable) are here, located under the source's path.
"""

from __future__ import annotations

from typing import Annotated, Literal

from msgspec import Meta

from heatgate.drivers.modbus.profile import load_profile
from heatgate.settings import AbsPath, Name, PositiveSeconds, Section, SourceSettings, TcpPort
from heatgate.typedload import ConfigError, Issue

__all__ = ["ModbusDevice", "ModbusRtuSource", "ModbusTcpSource"]


class ModbusDevice(Section, frozen=True, kw_only=True):
    name: Name
    unit_id: Annotated[int, Meta(ge=0, le=247)]
    profile: Annotated[str, Meta(min_length=1)]
    """A shipped profile name (``sim-heatpump``) or an absolute path to a profile file."""
    interval_s: PositiveSeconds = 10.0


class ModbusTcpSource(SourceSettings, tag="modbus-tcp", frozen=True, kw_only=True):
    host: str = "127.0.0.1"
    port: TcpPort = 502
    timeout_s: PositiveSeconds = 1.0
    devices: Annotated[list[ModbusDevice], Meta(min_length=1)]

    def issues(self, where: str) -> list[Issue]:
        return _bus_issues(self.devices, where)


class ModbusRtuSource(SourceSettings, tag="modbus-rtu", frozen=True, kw_only=True):
    port: AbsPath
    baudrate: Literal[1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200] = 9600
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    timeout_s: PositiveSeconds = 0.5
    devices: Annotated[list[ModbusDevice], Meta(min_length=1)]

    def issues(self, where: str) -> list[Issue]:
        return _bus_issues(self.devices, where)


def _bus_issues(devices: list[ModbusDevice], where: str) -> list[Issue]:
    """Unit ids and device names unique on one bus; each device's profile loads."""
    issues: list[Issue] = []
    units: set[int] = set()
    names: set[str] = set()
    for index, device in enumerate(devices):
        at = f"{where}.devices[{index}]"
        if device.unit_id in units:
            issues.append(Issue(f"{at}.unit_id", f"duplicate unit id {device.unit_id} on this bus"))
        units.add(device.unit_id)
        if device.name in names:
            issues.append(Issue(f"{at}.name", f"duplicate device name {device.name!r}"))
        names.add(device.name)
        issues.extend(_profile_issues(device.profile, f"{at}.profile"))
    return issues


def _profile_issues(profile: str, where: str) -> list[Issue]:
    """Load the device's profile fully; its problems located under ``where``, e.g.
    ``sources[0].devices[0].profile: /…/x.toml: points[2].type: …``."""
    try:
        load_profile(profile)
    except ConfigError as exc:
        if exc.source == profile and len(exc.issues) == 1 and not exc.issues[0].path:
            return [Issue(where, exc.issues[0].message)]  # not found / not a name
        return [Issue(where, f"{exc.source}: {issue}") for issue in exc.issues]
    return []
