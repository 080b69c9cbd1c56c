"""Telegrams as real meters write them, for the simulator and the tests. Pure."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from heatgate.drivers.p1.crc import crc16_arc

__all__ = ["MeterState", "build_telegram", "dsmr_timestamp"]

_NL = ZoneInfo("Europe/Amsterdam")
HEADER = "/ISk5\\2MT382-1000"


@dataclass
class MeterState:
    """What the simulated meter shows; the simulator advances it between telegrams."""

    equipment_id: str = "4530303334303036393938343532303136"
    gas_equipment_id: str = "4730303339303031393930303537313136"
    delivered_t1_kwh: float = 1234.567
    delivered_t2_kwh: float = 2345.678
    returned_t1_kwh: float = 12.345
    returned_t2_kwh: float = 23.456
    power_delivered_kw: float = 0.42
    power_returned_kw: float = 0.0
    voltage_v: tuple[float, float, float] = (230.1, 229.8, 231.0)
    current_a: tuple[int, int, int] = (1, 0, 1)
    tariff: int = 2
    power_failures: int = 4
    long_power_failures: int = 2
    gas_m3: float = 4567.891
    gas_ts: float = 0.0

    def advance(self, seconds: float, now: float) -> None:
        kwh = self.power_delivered_kw * seconds / 3600
        if self.tariff == 1:
            self.delivered_t1_kwh += kwh
        else:
            self.delivered_t2_kwh += kwh
        self.gas_m3 += 0.0001 * seconds
        self.gas_ts = now - now % 300  # DSMR 5 meters read the gas meter every 5 minutes


def dsmr_timestamp(epoch_s: float, *, with_dst_flag: bool = True) -> str:
    """``YYMMDDhhmmssX`` in Dutch local time, X = S (summer) or W (winter)."""
    local = datetime.fromtimestamp(epoch_s, UTC).astimezone(_NL)
    flag = ("S" if local.dst() else "W") if with_dst_flag else ""
    return local.strftime("%y%m%d%H%M%S") + flag


def build_telegram(dsmr_version: str, state: MeterState, now: float, *, bad_crc: bool = False) -> bytes:
    """One complete telegram, CR LF line ends; DSMR 4/5 with a CRC (wrong if ``bad_crc``)."""
    if dsmr_version in ("2.2", "3"):
        return _v2(state, now)
    s = state
    v = s.voltage_v
    a = s.current_a
    lines = [
        HEADER,
        "",
        f"1-3:0.2.8({'50' if dsmr_version.startswith('5') else '42'})",
        f"0-0:1.0.0({dsmr_timestamp(now)})",
        f"0-0:96.1.1({s.equipment_id})",
        f"1-0:1.8.1({s.delivered_t1_kwh:010.3f}*kWh)",
        f"1-0:1.8.2({s.delivered_t2_kwh:010.3f}*kWh)",
        f"1-0:2.8.1({s.returned_t1_kwh:010.3f}*kWh)",
        f"1-0:2.8.2({s.returned_t2_kwh:010.3f}*kWh)",
        f"0-0:96.14.0({s.tariff:04d})",
        f"1-0:1.7.0({s.power_delivered_kw:06.3f}*kW)",
        f"1-0:2.7.0({s.power_returned_kw:06.3f}*kW)",
        f"0-0:96.7.21({s.power_failures:05d})",
        f"0-0:96.7.9({s.long_power_failures:05d})",
        "1-0:99.97.0(1)(0-0:96.7.19)(200101120000W)(0000000240*s)",
        "1-0:32.32.0(00002)",
        "1-0:52.32.0(00001)",
        "1-0:72.32.0(00000)",
        "1-0:32.36.0(00000)",
        "1-0:52.36.0(00003)",
        "1-0:72.36.0(00000)",
        "0-0:96.13.0()",
        f"1-0:32.7.0({v[0]:05.1f}*V)",
        f"1-0:52.7.0({v[1]:05.1f}*V)",
        f"1-0:72.7.0({v[2]:05.1f}*V)",
        f"1-0:31.7.0({a[0]:03d}*A)",
        f"1-0:51.7.0({a[1]:03d}*A)",
        f"1-0:71.7.0({a[2]:03d}*A)",
        f"1-0:21.7.0({s.power_delivered_kw * 0.6:06.3f}*kW)",
        f"1-0:41.7.0({s.power_delivered_kw * 0.1:06.3f}*kW)",
        f"1-0:61.7.0({s.power_delivered_kw * 0.3:06.3f}*kW)",
        "1-0:22.7.0(00.000*kW)",
        "1-0:42.7.0(00.000*kW)",
        "1-0:62.7.0(00.000*kW)",
        "0-1:24.1.0(003)",
        f"0-1:96.1.0({s.gas_equipment_id})",
        f"0-1:24.2.1({dsmr_timestamp(s.gas_ts or now)})({s.gas_m3:09.3f}*m3)",
    ]
    body = ("\r\n".join(lines) + "\r\n!").encode("ascii")
    crc = crc16_arc(body)
    if bad_crc:
        crc ^= 0x5A5A
    return body + f"{crc:04X}\r\n".encode("ascii")


def _v2(s: MeterState, now: float) -> bytes:
    lines = [
        HEADER,
        "",
        f"0-0:96.1.1({s.equipment_id})",
        f"1-0:1.8.1({s.delivered_t1_kwh:09.3f}*kWh)",
        f"1-0:1.8.2({s.delivered_t2_kwh:09.3f}*kWh)",
        f"1-0:2.8.1({s.returned_t1_kwh:09.3f}*kWh)",
        f"1-0:2.8.2({s.returned_t2_kwh:09.3f}*kWh)",
        f"0-0:96.14.0({s.tariff:04d})",
        f"1-0:1.7.0({s.power_delivered_kw:07.2f}*kW)",
        f"1-0:2.7.0({s.power_returned_kw:07.2f}*kW)",
        "0-0:17.0.0(0999.00*kW)",
        "0-0:96.3.10(1)",
        "0-0:96.13.1()",
        "0-0:96.13.0()",
        "0-1:24.1.0(3)",
        f"0-1:96.1.0({s.gas_equipment_id})",
        f"0-1:24.3.0({dsmr_timestamp(s.gas_ts or now, with_dst_flag=False)})(00)(60)(1)(0-1:24.2.1)(m3)",
        f"({s.gas_m3:09.3f})",
        "0-1:24.4.0(1)",
        "!",
    ]
    return ("\r\n".join(lines) + "\r\n").encode("ascii")
