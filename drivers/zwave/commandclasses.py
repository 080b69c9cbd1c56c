"""Command-class decoders: a command (``CC CMD params…``) -> point values. Pure.

Supported reports: Meter (0x32, v1 to v4), Multilevel Sensor (0x31), Notification (0x71),
Battery (0x80). Security encapsulation (S0 0x98, S2 0x9F) cannot be read without the network
keys the host does not hold: it decodes to :class:`SecureEncapsulated`, which the runner
counts as ``unsupported_secure``. Anything else is :class:`Unsupported`. Malformed reports
raise :class:`CommandClassError`.
"""

from __future__ import annotations

from dataclasses import dataclass

from heatgate.drivers.reading import PointKind
from heatgate.drivers.zwave.frames import ZwaveError

__all__ = [
    "BATTERY",
    "METER",
    "NOTIFICATION",
    "SECURITY_S0",
    "SECURITY_S2",
    "SENSOR_MULTILEVEL",
    "CommandClassError",
    "PointValue",
    "SecureEncapsulated",
    "Unsupported",
    "decode_command",
]

SENSOR_MULTILEVEL = 0x31
METER = 0x32
NOTIFICATION = 0x71
BATTERY = 0x80
SECURITY_S0 = 0x98
SECURITY_S2 = 0x9F


class CommandClassError(ZwaveError):
    """A report too short or otherwise malformed for its command class."""

    def __init__(self, message: str, *, command_class: int) -> None:
        super().__init__(message)
        self.command_class = command_class


@dataclass(frozen=True, slots=True)
class PointValue:
    point: str
    kind: PointKind
    value: float | int
    unit: str | None = None
    text: str | None = None


@dataclass(frozen=True, slots=True)
class SecureEncapsulated:
    command_class: int


@dataclass(frozen=True, slots=True)
class Unsupported:
    command_class: int
    command: int


Decoded = list[PointValue] | SecureEncapsulated | Unsupported

# Multilevel sensor type -> {scale: (point, unit)}.
_SENSORS: dict[int, dict[int, tuple[str, str]]] = {
    0x01: {0: ("air_temperature_c", "°C"), 1: ("air_temperature_f", "°F")},
    0x03: {0: ("illuminance_pct", "%"), 1: ("illuminance_lux", "lx")},
    0x04: {0: ("power_w", "W"), 1: ("power_btu_h", "BTU/h")},
    0x05: {0: ("humidity_pct", "%"), 1: ("humidity_g_m3", "g/m3")},
    0x0F: {0: ("voltage_v", "V"), 1: ("voltage_mv", "mV")},
    0x10: {0: ("current_a", "A"), 1: ("current_ma", "mA")},
    0x11: {0: ("co2_ppm", "ppm")},
    0x17: {0: ("water_temperature_c", "°C"), 1: ("water_temperature_f", "°F")},
}

# Meter type -> {scale (0..7, 8.. = v4 scale2 + 8): (point, unit, kind)}.
_C, _M = PointKind.COUNTER, PointKind.MEASUREMENT
_METERS: dict[int, tuple[str, dict[int, tuple[str, str | None, PointKind]]]] = {
    0x01: (
        "electric",
        {
            0: ("energy_kwh", "kWh", _C),
            1: ("energy_kvah", "kVAh", _C),
            2: ("power_w", "W", _M),
            3: ("pulses", None, _C),
            4: ("voltage_v", "V", _M),
            5: ("current_a", "A", _M),
            6: ("power_factor", None, _M),
            8: ("reactive_power_kvar", "kVar", _M),
            9: ("reactive_energy_kvarh", "kVarh", _C),
        },
    ),
    0x02: ("gas", {0: ("gas_m3", "m3", _C), 1: ("gas_ft3", "ft3", _C), 3: ("gas_pulses", None, _C)}),
    0x03: (
        "water",
        {
            0: ("water_m3", "m3", _C),
            1: ("water_ft3", "ft3", _C),
            2: ("water_us_gal", "gal", _C),
            3: ("water_pulses", None, _C),
        },
    ),
}

_NOTIFICATION_TYPES = {
    0x01: "smoke",
    0x02: "co",
    0x03: "co2",
    0x04: "heat",
    0x05: "water",
    0x06: "access_control",
    0x07: "home_security",
    0x08: "power_management",
    0x09: "system",
    0x0A: "emergency",
}
_EVENTS = {
    (0x07, 0x00): "idle",
    (0x07, 0x03): "tampering",
    (0x07, 0x07): "motion detected",
    (0x07, 0x08): "motion detected",
    (0x05, 0x02): "water leak detected",
    (0x01, 0x02): "smoke detected",
    (0x08, 0x02): "ac mains disconnected",
    (0x08, 0x03): "ac mains re-connected",
    (0x09, 0x03): "system hardware failure",
    (0x05, 0x00): "idle",
    (0x01, 0x00): "idle",
}


def decode_command(command: bytes) -> Decoded:
    """Decode one command (as carried by ApplicationCommandHandler)."""
    if len(command) < 1:
        raise CommandClassError("empty command", command_class=-1)
    cc = command[0]
    if cc in (SECURITY_S0, SECURITY_S2):
        return SecureEncapsulated(cc)
    if len(command) < 2:
        raise CommandClassError("no command byte", command_class=cc)
    cmd = command[1]
    params = command[2:]
    if cc == BATTERY and cmd == 0x03:
        return _battery(params)
    if cc == SENSOR_MULTILEVEL and cmd == 0x05:
        return _sensor(params)
    if cc == METER and cmd == 0x02:
        return _meter(params)
    if cc == NOTIFICATION and cmd == 0x05:
        return _notification(params)
    return Unsupported(cc, cmd)


def _need(params: bytes, count: int, cc: int, what: str) -> None:
    if len(params) < count:
        raise CommandClassError(f"{what}: {len(params)} bytes, need {count}", command_class=cc)


def _value(data: bytes, precision_scale_size: int, offset: int, cc: int) -> tuple[float | int, int, int, int]:
    """(value, precision, scale bits, size) of a ``precision|scale|size`` encoded value at ``offset``."""
    precision = precision_scale_size >> 5
    scale = (precision_scale_size >> 3) & 0x03
    size = precision_scale_size & 0x07
    if size not in (1, 2, 4):
        raise CommandClassError(f"value size {size} (must be 1, 2 or 4)", command_class=cc)
    _need(data, offset + size, cc, "value")
    raw = int.from_bytes(data[offset : offset + size], "big", signed=True)
    value: float | int = raw if precision == 0 else round(raw / 10**precision, precision)
    return value, precision, scale, size


def _battery(params: bytes) -> list[PointValue]:
    _need(params, 1, BATTERY, "battery report")
    level = params[0]
    if level == 0xFF:
        return [PointValue("battery_low", PointKind.STATUS, 1, text="battery low warning")]
    if level > 100:
        raise CommandClassError(f"battery level {level}", command_class=BATTERY)
    return [
        PointValue("battery_pct", PointKind.MEASUREMENT, level, "%"),
        PointValue("battery_low", PointKind.STATUS, 0, text="ok"),
    ]


def _sensor(params: bytes) -> list[PointValue]:
    _need(params, 2, SENSOR_MULTILEVEL, "sensor report")
    sensor_type = params[0]
    value, _, scale, _ = _value(params, params[1], 2, SENSOR_MULTILEVEL)
    point, unit = _SENSORS.get(sensor_type, {}).get(scale, (f"sensor_{sensor_type}_scale_{scale}", ""))
    return [PointValue(point, PointKind.MEASUREMENT, value, unit or None)]


def _meter(params: bytes) -> list[PointValue]:
    _need(params, 2, METER, "meter report")
    meter_type = params[0] & 0x1F
    rate_type = (params[0] >> 5) & 0x03
    scale_high = params[0] >> 7  # v3+: third scale bit
    value, _, scale_low, size = _value(params, params[1], 2, METER)
    scale = (scale_high << 2) | scale_low
    rest = params[2 + size :]
    if scale == 7:
        # v4: scale 7 means "more scales": scale2 follows delta time and previous value.
        delta_present = len(rest) >= 2 and int.from_bytes(rest[:2], "big") != 0
        at = 2 + (size if delta_present else 0)
        _need(rest, at + 1, METER, "meter report scale2")
        scale = 8 + rest[at]
    name, table = _METERS.get(meter_type, (f"meter_{meter_type}", {}))
    point, unit, kind = table.get(scale, (f"{name}_scale_{scale}", None, PointKind.MEASUREMENT))
    if rate_type == 2:  # export
        point = point.replace("energy", "energy_returned", 1) if "energy" in point else f"{point}_returned"
    return [PointValue(point, kind, value, unit)]


def _notification(params: bytes) -> list[PointValue]:
    _need(params, 2, NOTIFICATION, "notification report")
    if len(params) < 6:  # v1 alarm report: type and level only
        return [PointValue(f"alarm_{params[0]}", PointKind.STATUS, params[1])]
    ntype, event = params[4], params[5]
    name = _NOTIFICATION_TYPES.get(ntype, f"notification_{ntype}")
    return [PointValue(f"{name}_event", PointKind.STATUS, event, text=_EVENTS.get((ntype, event)))]
