"""Finding devices on a link: does a unit id answer, and which shipped profile fits it."""

from __future__ import annotations

from collections.abc import Sequence

from heatgate.drivers.modbus.errors import ModbusExceptionResponse, ModbusTimeout
from heatgate.drivers.modbus.link import ModbusLink
from heatgate.drivers.modbus.profile import Profile, load_profile, shipped_profiles
from heatgate.drivers.modbus.values import point_value

__all__ = ["identify", "probe_unit"]


async def probe_unit(link: ModbusLink, unit_id: int, *, timeout_s: float) -> bool:
    """True if ``unit_id`` answers anything to a one-register read of holding 0 (an exception
    response counts: a live slave answers "illegal address" for what it does not have).
    Link failures raise ModbusCommError."""
    try:
        await link.request("holding", 0, count=1, unit_id=unit_id, timeout_s=timeout_s)
    except ModbusExceptionResponse:
        return True
    except ModbusTimeout:
        return False
    return True


async def identify(
    link: ModbusLink, unit_id: int, *, timeout_s: float, profiles: Sequence[Profile] | None = None
) -> str:
    """Which profile's signature the unit matches, as a sentence for the installer: the
    ``profiles`` given (an installer's own), or every shipped one."""
    matches: list[Profile] = []
    candidates = list(profiles) if profiles is not None else [load_profile(name) for name in shipped_profiles()]
    for profile in candidates:
        if profile.signature is None:
            continue
        point = profile.point(profile.signature.point)
        try:
            data = await link.request(
                point.table, point.address, count=point.count, unit_id=unit_id, timeout_s=timeout_s
            )
        except (ModbusExceptionResponse, ModbusTimeout):
            continue
        decoded = point_value(point, data)
        if decoded.value is None:
            continue
        value = decoded.value
        if profile.signature.equals is not None and isinstance(value, int | float):
            value = round((value - point.offset) / point.scale)  # raw code
        if profile.signature.matches(value):
            matches.append(profile)
    if not matches:
        which = "given" if profiles is not None else "shipped"
        return f"no {which} profile recognises it (profiles without a signature cannot be told)"
    names = ", ".join(f"{p.name} ({p.vendor} {p.model}, {p.device_type})" for p in matches)
    return f"fits profile {names}"
