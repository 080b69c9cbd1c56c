"""The simulated devices' physics and register images (no I/O; the servers are in sim.py).

A :class:`SimDevice` pairs a profile with a model that says each point's value at a time;
its register image is encoded through the same profile the driver decodes with, so the
simulator and the driver can never disagree about a layout without a test noticing.

A :class:`RegisterImageDevice` knows no profile: it serves a fixed register image (built from
reference data, independently of any profile) with the device's real limits: ranges it
refuses (exception 2), its largest read (exception 3 above it), an even-count rule, and the
word order it takes writes in. Profiles are tested against it.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from heatgate.drivers.modbus.decode import encode_value
from heatgate.drivers.modbus.profile import BIT_TABLES, Point, Profile, load_profile

__all__ = [
    "FaultPlan",
    "HeatPumpModel",
    "MeterModel",
    "RegisterImageDevice",
    "SimDevice",
    "heatpump_device",
    "meter_device",
]

Value = int | float | str


@dataclass
class FaultPlan:
    """Faults a simulated device shows, timed from its start.

    ``fault_code`` appears in the fault register at ``fault_at_s`` and clears after
    ``clear_after_s`` (never if None); ``drop_rate`` of requests get no answer; every answer is
    delayed by ``delay_ms``; ``exception_rate`` of requests get a "device failure" exception;
    after ``offline_after_s`` the device answers nothing at all.
    """

    fault_code: int | None = None
    fault_at_s: float = 0.0
    clear_after_s: float | None = None
    drop_rate: float = 0.0
    delay_ms: float = 0.0
    exception_rate: float = 0.0
    offline_after_s: float | None = None
    seed: int | None = None

    def active_fault(self, elapsed_s: float) -> int:
        if self.fault_code is None or elapsed_s < self.fault_at_s:
            return 0
        if self.clear_after_s is not None and elapsed_s >= self.fault_at_s + self.clear_after_s:
            return 0
        return self.fault_code


class HeatPumpModel:
    """An air-to-water heat pump: outdoor temperature over the day, a heating curve, an
    inverter compressor, a COP that follows the lift, energy counters that only go up."""

    def __init__(self, *, serial: str = "HGSIM0000001234", seed: int | None = None) -> None:
        self.serial = serial
        self.rng = random.Random(seed)
        self.flow_setpoint_c = 35.0
        self.hot_water_setpoint_c = 50.0
        self.heating_enabled = 1
        self.heat_energy_kwh = 1234.567
        self.electric_energy_kwh = 400.25
        self.compressor_starts = 70000
        self._last_s: float | None = None

    def writable(self, name: str, value: float) -> bool:
        if name == "flow_setpoint_c":
            self.flow_setpoint_c = value
        elif name == "hot_water_setpoint_c":
            self.hot_water_setpoint_c = value
        elif name == "heating_enabled":
            self.heating_enabled = int(bool(value))
        else:
            return False
        return True

    def values(self, now_s: float, fault_code: int) -> dict[str, Value]:
        seconds_of_day = now_s % 86400
        outdoor = 4.0 + 6.0 * math.sin(2 * math.pi * (seconds_of_day / 86400 - 0.375)) + self.rng.uniform(-0.2, 0.2)
        running = bool(self.heating_enabled) and fault_code == 0
        demand = max(0.0, min(1.0, (18.0 - outdoor) / 25.0))
        freq = 25.0 + 85.0 * demand if running else 0.0
        flow = self.flow_setpoint_c - 1.0 + self.rng.uniform(-0.3, 0.3) if running else 22.0
        ret = flow - (5.0 if running else 0.5)
        cop = max(1.5, 7.0 - 0.1 * (flow - outdoor)) if running else 0.0
        heat_w = int(freq * 80.0)
        if self._last_s is not None and now_s > self._last_s:
            dt_h = (now_s - self._last_s) / 3600.0
            self.heat_energy_kwh += heat_w / 1000.0 * dt_h
            if cop:
                self.electric_energy_kwh += heat_w / 1000.0 / cop * dt_h
        self._last_s = now_s
        return {
            "model_code": 0x4847,
            "flow_setpoint_c": self.flow_setpoint_c,
            "hot_water_setpoint_c": self.hot_water_setpoint_c,
            "outdoor_temp_c": round(outdoor, 1),
            "flow_temp_c": round(flow, 1),
            "return_temp_c": round(ret, 1),
            "hot_water_temp_c": round(self.hot_water_setpoint_c - 2.0, 1),
            "compressor_freq_hz": round(freq, 1),
            "cop": cop,
            "heat_power_w": heat_w,
            "heat_energy_kwh": self.heat_energy_kwh,
            "electric_energy_kwh": self.electric_energy_kwh,
            "compressor_starts": self.compressor_starts,
            "operating_state": 1 if running else 0,
            "fault_code": fault_code,
            "relay_flags": 0b101 if running else 0,
            "degree_minutes": -120,
            "serial_number": self.serial,
            "flow_offset_k": -1.25,
            "firmware_build": 0x0203,
            "solar_temp_c": -3276.8,  # raw -32768: "sensor not fitted"
            "heating_enabled": self.heating_enabled,
            "alarm_active": int(fault_code != 0),
        }


class MeterModel:
    """A three-phase meter: mains voltages and frequency, a load that wanders, counters."""

    def __init__(self, *, serial: int = 20230417, seed: int | None = None) -> None:
        self.serial = serial
        self.rng = random.Random(seed)
        self.import_kwh = 5123.5
        self.export_kwh = 812.25
        self._last_s: float | None = None

    def writable(self, name: str, value: float) -> bool:
        return False

    def values(self, now_s: float, fault_code: int) -> dict[str, Value]:
        out: dict[str, Value] = {}
        total = 0.0
        for phase in (1, 2, 3):
            volts = 230.0 + self.rng.uniform(-2.0, 2.0)
            amps = 2.0 + phase + self.rng.uniform(-0.5, 0.5)
            out[f"voltage_l{phase}_v"], out[f"current_l{phase}_a"] = volts, amps
            out[f"power_l{phase}_w"] = volts * amps * 0.95
            total += volts * amps * 0.95
        if self._last_s is not None and now_s > self._last_s:
            self.import_kwh += total / 1000.0 * (now_s - self._last_s) / 3600.0
        self._last_s = now_s
        out.update(
            total_power_w=total,
            power_factor=0.95,
            frequency_hz=50.0 + self.rng.uniform(-0.05, 0.05),
            import_energy_kwh=self.import_kwh,
            export_energy_kwh=self.export_kwh,
            total_energy_kwh=self.import_kwh + self.export_kwh,
            serial_number=self.serial,
        )
        return out


@dataclass
class SimDevice:
    """One simulated slave: a profile, a model, faults, and the clock they run on."""

    profile: Profile
    model: HeatPumpModel | MeterModel
    faults: FaultPlan = field(default_factory=FaultPlan)
    clock: Callable[[], float] = time.time
    started_mono: float = field(default_factory=time.monotonic)
    offline: bool = False
    """Set to silence the device at once (as if unplugged)."""

    def elapsed_s(self) -> float:
        return time.monotonic() - self.started_mono

    def is_offline(self) -> bool:
        t = self.faults.offline_after_s
        return self.offline or (t is not None and self.elapsed_s() >= t)

    def image(self, table: str) -> dict[int, int]:
        """The table's registers (or bits) now, by address."""
        values = self.model.values(self.clock(), self.faults.active_fault(self.elapsed_s()))
        words: dict[int, int] = {}
        for point in self.profile.points:
            if point.table != table or point.name not in values:
                continue
            for i, word in enumerate(_encode(point, values[point.name])):
                words[point.address + i] = word
        return words

    def readable(self, table: str, address: int, count: int) -> bool:
        return not any(
            u.table == table and address <= u.end and u.start < address + count for u in self.profile.unreadable
        )

    def write(self, table: str, address: int, words: list[int]) -> bool:
        """Apply a write; False (illegal address/value) if it is not one whole writable point
        within bounds."""
        for point in self.profile.points:
            if point.table == table and point.address == address and point.writable:
                if point.table in BIT_TABLES:
                    value = float(bool(words[0]))
                else:
                    from heatgate.drivers.modbus.values import point_value

                    if len(words) != point.count:
                        return False
                    decoded = point_value(point, words).value
                    if not isinstance(decoded, int | float):
                        return False
                    value = float(decoded)
                assert point.min is not None and point.max is not None
                if not point.min <= value <= point.max:
                    return False
                return self.model.writable(point.name, value)
        return False

    def current(self, name: str) -> Value:
        """A point's present value in engineering units (tests read setpoints back here)."""
        return self.model.values(self.clock(), self.faults.active_fault(self.elapsed_s()))[name]


def _encode(point: Point, value: Value) -> list[int]:
    if point.table in BIT_TABLES:
        return [1 if value else 0]
    if point.type == "string":
        return encode_value(str(value), "string", byte_order=point.byte_order, length=point.length)
    assert not isinstance(value, str)
    raw = (value - point.offset) / point.scale
    if point.type.startswith("f"):
        return encode_value(raw, point.type, word_order=point.word_order, byte_order=point.byte_order)
    return encode_value(round(raw), point.type, word_order=point.word_order, byte_order=point.byte_order)


def heatpump_device(
    faults: FaultPlan | None = None, *, serial: str = "HGSIM0000001234", seed: int | None = None
) -> SimDevice:
    return SimDevice(load_profile("sim-heatpump"), HeatPumpModel(serial=serial, seed=seed), faults or FaultPlan())


def meter_device(faults: FaultPlan | None = None, *, serial: int = 20230417, seed: int | None = None) -> SimDevice:
    return SimDevice(load_profile("sdm630"), MeterModel(serial=serial, seed=seed), faults or FaultPlan())


@dataclass
class RegisterImageDevice:
    """A slave served from a raw register image, with the limits of the real device.

    ``tables`` maps ``holding``/``input``/``coil``/``discrete`` to ``{address: word}``
    (unlisted addresses read 0 unless refused). ``unreadable`` lists ``(table, first, last)``
    ranges answered with exception 2 when a read touches them (``refuse_unlisted`` refuses
    every address not in the image, as many heat pumps do). A read of more than
    ``max_registers_per_read`` registers, or of an odd count with ``even_register_count``, is
    answered with exception 3. ``write_words_reversed``: the device takes multi-register writes
    in the opposite word order to the one it reads in (NIBE S-series), so a write stored here
    reads back right only if it was sent in the device's write order.
    """

    tables: dict[str, dict[int, int]]
    unreadable: list[tuple[str, int, int]] = field(default_factory=list)
    refuse_unlisted: bool = False
    max_registers_per_read: int | None = None
    even_register_count: bool = False
    write_words_reversed: bool = False
    silent: list[tuple[str, int, int]] = field(default_factory=list)
    """``(table, first, last)`` ranges a read touching which gets no answer at all (some
    devices drop what they cannot serve instead of answering an exception)."""
    writable: set[tuple[str, int]] | None = None
    """``(table, address)`` of writes accepted; None: any address in the image."""
    faults: FaultPlan = field(default_factory=FaultPlan)
    offline: bool = False
    reads: list[tuple[str, int, int]] = field(default_factory=list)
    """Every read asked, as ``(table, address, count)`` (tests count requests here)."""

    def is_offline(self) -> bool:
        return self.offline

    def image(self, table: str) -> dict[int, int]:
        return self.tables.get(table, {})

    def refusal(self, table: str, address: int, count: int) -> int | None:
        """The exception code a read gets (2 or 3), or None when it is answered."""
        self.reads.append((table, address, count))
        if table not in BIT_TABLES:
            if self.max_registers_per_read is not None and count > self.max_registers_per_read:
                return 3
            if self.even_register_count and count % 2:
                return 3
        end = address + count - 1
        if any(t == table and address <= last and first <= end for t, first, last in self.unreadable):
            return 2
        if self.refuse_unlisted:
            known = self.tables.get(table, {})
            if any(a not in known for a in range(address, end + 1)):
                return 2
        return None

    def readable(self, table: str, address: int, count: int) -> bool:
        return self.refusal(table, address, count) is None

    def drops(self, table: str, address: int, count: int) -> bool:
        end = address + count - 1
        return any(t == table and address <= last and first <= end for t, first, last in self.silent)

    def write(self, table: str, address: int, words: list[int]) -> bool:
        if self.writable is not None and (table, address) not in self.writable:
            return False
        stored = list(reversed(words)) if self.write_words_reversed else list(words)
        image = self.tables.setdefault(table, {})
        for i, word in enumerate(stored):
            image[address + i] = word
        return True
