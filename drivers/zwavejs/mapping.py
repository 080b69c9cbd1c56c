"""Z-Wave JS values to heatgate points: pure functions, no I/O.

Point names follow the Serial API source's (``air_temperature_c``, ``energy_kwh``,
``battery_pct``, ``water_alarm``), so that one privacy policy fits both Z-Wave sources. A value
on a multi-channel endpoint gets the prefix ``ep<N>_``. Values of other command classes, and
values heatgate has no point for (reset buttons, durations, target values), map to nothing.

Notification values: the alarm types (smoke, CO, CO2, heat, water) and Home Security's
tamper (cover) state are ``fault`` points whose value is the event code (0 = idle, which the
pipeline treats as no fault); every other notification variable is a ``status`` point.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from heatgate.drivers.reading import PointKind
from heatgate.drivers.zwavejs.messages import ValueMetadata

__all__ = ["CC", "ValueKey", "map_notification_event", "map_value"]


class CC:
    BINARY_SWITCH = 0x25
    MULTILEVEL_SWITCH = 0x26
    MULTILEVEL_SENSOR = 0x31
    METER = 0x32
    NOTIFICATION = 0x71
    BATTERY = 0x80


@dataclass(frozen=True, slots=True)
class ValueKey:
    """A value's id within the network."""

    node_id: int
    endpoint: int
    command_class: int
    property: str | int
    property_key: str | int | None


@dataclass(frozen=True, slots=True)
class Point:
    point: str
    kind: PointKind
    value: float | int | str | None
    unit: str | None = None
    text: str | None = None


_M, _C, _S, _F = PointKind.MEASUREMENT, PointKind.COUNTER, PointKind.STATUS, PointKind.FAULT

# (sensor type, scale) -> point; the unit comes from the metadata.
_SENSORS: dict[tuple[int, int], str] = {
    (1, 0): "air_temperature_c",
    (1, 1): "air_temperature_f",
    (3, 0): "illuminance_pct",
    (3, 1): "illuminance_lux",
    (4, 0): "power_w",
    (5, 0): "humidity_pct",
    (15, 0): "voltage_v",
    (16, 0): "current_a",
    (17, 0): "co2_ppm",
    (23, 0): "water_temperature_c",
}
# (meter type, scale) -> (point, kind).
_METERS: dict[tuple[int, int], tuple[str, PointKind]] = {
    (1, 0): ("energy_kwh", _C),
    (1, 1): ("energy_kvah", _C),
    (1, 2): ("power_w", _M),
    (1, 3): ("pulses", _C),
    (1, 4): ("voltage_v", _M),
    (1, 5): ("current_a", _M),
    (1, 6): ("power_factor", _M),
    (2, 0): ("gas_m3", _C),
    (3, 0): ("water_m3", _C),
}
_ALARM_TYPES = {1: "smoke", 2: "co", 3: "co2", 4: "heat", 5: "water"}
_NOTIFICATION_TYPES = {
    **_ALARM_TYPES,
    6: "access_control",
    7: "home_security",
    8: "power_management",
    9: "system",
    10: "emergency",
}
HOME_SECURITY = 7
_TAMPER_EVENTS = {3, 4}  # tampering, product cover removed / invalid code


def snake(text: str) -> str:
    """``"Air temperature"`` -> ``air_temperature``."""
    return re.sub(r"[^a-z0-9]+", "_", text.lower()).strip("_") or "value"


def _number(value: Any) -> float | int | None:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int | float):
        return value
    return None


def _prefixed(endpoint: int, point: str) -> str:
    return f"ep{endpoint}_{point}" if endpoint > 0 else point


def map_value(key: ValueKey, value: Any, metadata: ValueMetadata | None) -> list[Point]:
    """The points one value update gives (none for values heatgate does not read)."""
    meta = metadata or ValueMetadata()
    specific = meta.ccSpecific or {}
    cc, prop = key.command_class, key.property
    number = _number(value)
    point: Point | None = None
    if cc == CC.MULTILEVEL_SENSOR and number is not None:
        sensor = _SENSORS.get((specific.get("sensorType", -1), specific.get("scale", -1)))
        name = sensor or f"sensor_{snake(str(prop))}"
        point = Point(name, _M, number, meta.unit)
    elif cc == CC.METER and prop == "value" and number is not None:
        mapped = _METERS.get((specific.get("meterType", -1), specific.get("scale", -1)))
        name, kind = mapped or (f"meter_{snake(str(key.property_key))}", _M)
        if specific.get("rateType") == 2:  # production / export
            name = name.replace("energy", "energy_returned", 1) if "energy" in name else f"{name}_returned"
        point = Point(name, kind, number, meta.unit)
    elif cc == CC.BATTERY and prop == "level" and number is not None:
        point = Point("battery_pct", _M, number, "%")
    elif cc == CC.BATTERY and prop == "isLow" and number is not None:
        point = Point("battery_low", _S, number, text="battery low warning" if number else "ok")
    elif cc == CC.BINARY_SWITCH and prop == "currentValue" and number is not None:
        point = Point("switch", _S, number, text="on" if number else "off")
    elif cc == CC.MULTILEVEL_SWITCH and prop == "currentValue" and number is not None:
        point = Point("level_pct", _M, number, "%")
    elif cc == CC.NOTIFICATION and isinstance(prop, str) and number is not None:
        point = _notification_value(prop, key.property_key, int(number), meta)
    return [] if point is None else [_with_endpoint(key.endpoint, point)]


def _with_endpoint(endpoint: int, point: Point) -> Point:
    if endpoint <= 0:
        return point
    return Point(_prefixed(endpoint, point.point), point.kind, point.value, point.unit, point.text)


def _notification_value(prop: str, prop_key: str | int | None, code: int, meta: ValueMetadata) -> Point | None:
    if prop in ("alarmType", "alarmLevel"):  # V1 alarm values: vendor-specific, no meaning here
        return None
    ntype = (meta.ccSpecific or {}).get("notificationType")
    text = (meta.states or {}).get(str(code))
    if code == 0:
        text = "idle"
    if ntype in _ALARM_TYPES:
        return Point(f"{_ALARM_TYPES[ntype]}_alarm", _F, code, text=text)
    if ntype == HOME_SECURITY and str(prop_key).lower().startswith("cover"):
        return Point("tamper", _F, code, text=text)
    name = _NOTIFICATION_TYPES.get(ntype, snake(prop)) if isinstance(ntype, int) else snake(prop)
    return Point(f"{name}_{snake(str(prop_key)) if prop_key is not None else 'event'}", _S, code, text=text)


def map_notification_event(endpoint: int, ntype: int, event: int, event_label: str | None) -> Point:
    """A stateless Notification CC event (zwave-js ``notification`` event) as a point."""
    if ntype in _ALARM_TYPES:
        point = Point(f"{_ALARM_TYPES[ntype]}_alarm", _F, event, text=event_label)
    elif ntype == HOME_SECURITY and event in _TAMPER_EVENTS:
        point = Point("tamper", _F, event, text=event_label)
    else:
        point = Point(f"{_NOTIFICATION_TYPES.get(ntype, f'notification_{ntype}')}_event", _S, event, text=event_label)
    return _with_endpoint(endpoint, point)
