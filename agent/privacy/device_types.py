"""Which device types the configured sources produce, and which rule of the register each falls under.

``heatgate check-config``, ``heatgate doctor``, ``heatgate privacy report`` and the daemon's start
show it, so that a device type the register does not list (and that therefore gets the most
restrictive treatment, see :mod:`agent.privacy.policy`) is seen at installation, not found later
in the data.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from heatgate.agent.privacy.policy import Policy, device_type_rules

__all__ = ["DeviceTypeRules", "configured_device_types", "device_type_report"]


@dataclass(frozen=True, slots=True)
class DeviceTypeRules:
    """One device type: who produces it, whether the register lists it, its rule per stream."""

    device_type: str
    producers: tuple[str, ...]
    """``source`` or ``source/device`` names that produce it."""
    listed: bool
    rules: dict[str, str]


def configured_device_types(sources: Iterable[Any]) -> dict[str, list[str]]:
    """Device type -> the sources (``source/device``) that produce readings of it.

    ``sources`` are the config's source entries (any object with the fields of its type tag:
    Modbus ``devices`` with a ``profile``, Z-Wave ``nodes``). A Modbus profile that does not
    load is skipped here (``check-config`` reports it)."""
    from heatgate.drivers.p1.telegram import DEVICE, DEVICE_TYPE, GAS_DEVICE, GAS_DEVICE_TYPE
    from heatgate.drivers.zwave.source import CONTROLLER_TYPE, UNKNOWN_NODE_TYPE
    from heatgate.typedload import ConfigError

    found: dict[str, list[str]] = {}

    def add(device_type: str, producer: str) -> None:
        found.setdefault(device_type, []).append(producer)

    for source in sources:
        tag = source.__struct_config__.tag
        if tag in ("modbus-tcp", "modbus-rtu", "modbus-rtu-over-tcp"):
            from heatgate.drivers.modbus.profile import load_profile

            for device in source.devices:
                try:
                    add(load_profile(device.profile).device_type, f"{source.name}/{device.name}")
                except ConfigError:
                    continue
        elif tag == "p1":
            add(DEVICE_TYPE, f"{source.name}/{DEVICE}")
            add(GAS_DEVICE_TYPE, f"{source.name}/{GAS_DEVICE}")
        elif tag in ("zwave", "zwave-js"):
            for node in source.nodes:
                add(node.device_type, f"{source.name}/{node.name}")
            add(UNKNOWN_NODE_TYPE, f"{source.name}/(nodes not configured)")
            add(CONTROLLER_TYPE, f"{source.name}/controller")
    return found


def device_type_report(policy: Policy, sources: Iterable[Any]) -> list[DeviceTypeRules]:
    """Per device type of the configured sources (sorted by name): its rule in each stream."""
    return [
        DeviceTypeRules(
            device_type=device_type,
            producers=tuple(producers),
            listed=policy.listed(device_type),
            rules=device_type_rules(policy, device_type),
        )
        for device_type, producers in sorted(configured_device_types(sources).items())
    ]
