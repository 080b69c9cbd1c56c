"""Shipped profiles against independent references, through the real Modbus TCP path.

Each file in ``tests/data/references/`` is a register table transcribed from a device's own
documentation (register, raw words, expected value, unit, label, source); it is written from
the reference, never generated from the profile. A pymodbus server serves those raw words
(:mod:`heatgate.drivers.sim.modbus_image`), the shipped profile polls them through
:class:`ModbusBusRunner`, and every decoded value must equal the reference's. Registers the
table does not list read as a poison word, so a point aimed at the wrong address cannot come
out right by reading zeros.

A second pass serves the image with the device's documented read limits (Eastron: at most 80
registers per request, exception 3; registers outside the parameter table, exception 2): the
plan made from the profile's declared limits must not break them.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import msgspec
import pytest

from heatgate.agent.config import ModbusDevice, ModbusTcpSource
from heatgate.drivers.modbus.planner import Block, plan_profile
from heatgate.drivers.modbus.profile import BIT_TABLES, Profile, load_profile, shipped_profiles
from heatgate.drivers.modbus.source import make_modbus_source
from heatgate.drivers.reading import Quality, Reading
from heatgate.drivers.sim.modbus_image import ImageRequest, RegisterImage, serve_image_tcp
from tests.support.leaks import run_async

REFERENCES_DIR = Path(__file__).parent / "data" / "references"
POISON_WORD = 0x7E7E
"""What unlisted registers read as in the value pass: decodes to nothing a reference expects."""

Value = int | float | None


class ReferenceRow(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    point: str
    table: str
    address: int
    words: list[int]
    value: float | int | None = None
    unit: str | None = None
    text: str | None = None
    quality: str = "ok"
    type: str | None = None
    """The register's type as the source gives it (checked against the profile's point)."""
    note: str = ""


class PresentRange(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    """Registers the source lists that no row reads: they exist on the device (read as 0)."""

    table: str
    first: int
    last: int
    note: str = ""


class Reference(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    profile: str
    source: str
    max_registers_per_request: int | None = None
    unmapped_is_error: bool = False
    unverified: list[str] = []
    """Profile points the transcribed source does not cover (each needs a comment saying why)."""
    present: list[PresentRange] = []
    """With ``unmapped_is_error``: the other registers the device has, so that only the
    registers the source does not list are refused."""
    registers: list[ReferenceRow]


def _load(path: Path) -> Reference:
    with path.open("rb") as handle:
        return msgspec.convert(tomllib.load(handle), Reference)


REFERENCE_PATHS = sorted(REFERENCES_DIR.glob("*.toml"))
REFERENCES = {path.stem: _load(path) for path in REFERENCE_PATHS}
NEW_PROFILES = [
    "sdm120",
    "sdm72d-m",
    "em24",
    "em340",
    "pro380",
    "lg-therma-v",
    "samsung-ehs-mim-b19n",
    "mitsubishi-ecodan-a1m",
    "remeha-gtw08",
]


def _image(reference: Reference, *, limits: bool) -> RegisterImage:
    words: dict[str, dict[int, int]] = {}
    for row in reference.registers:
        table = words.setdefault(row.table, {})
        for offset, word in enumerate(row.words):
            table[row.address + offset] = word
    if not limits:
        return RegisterImage(words=words, fill_word=POISON_WORD)
    for span in reference.present:
        table = words.setdefault(span.table, {})
        for address in range(span.first, span.last + 1):
            table.setdefault(address, 0)
    return RegisterImage(
        words=words,
        max_registers_per_request=reference.max_registers_per_request,
        unmapped_is_error=reference.unmapped_is_error,
    )


def _poll(profile_name: str, image: RegisterImage) -> dict[str, Reading]:
    async def main() -> dict[str, Reading]:
        server = await serve_image_tcp({1: image})
        config = ModbusTcpSource(
            name="ref-bus",
            host="127.0.0.1",
            port=server.port,
            timeout_s=1.0,
            devices=[ModbusDevice(name="dev", unit_id=1, profile=profile_name)],
        )
        runner = make_modbus_source(config)
        try:
            readings = await runner.poll_device(runner.devices["dev"])
        finally:
            runner.link.close()
            await server.stop()
        return {r.point: r for r in readings}

    return run_async(main())


def _limit_violations(blocks: list[Block], reference: Reference, image: RegisterImage) -> list[str]:
    """Blocks of the plan the device would refuse for spanning gaps or too many registers
    (computed from the plan, not the poll). A point on an address the device lacks is a
    profile error, not a planner limit: it fails here."""
    out = []
    for block in blocks:
        limit = reference.max_registers_per_request
        if block.table not in BIT_TABLES and limit is not None and block.count > limit:
            out.append(f"{block.table} {block.start}+{block.count}: more than {limit} registers")
        if reference.unmapped_is_error:
            present = image.words.get(block.table, {})
            own = {a for p in block.points for a in range(p.address, p.end)}
            absent = sorted(own - set(present))
            assert not absent, f"profile reads {block.table} {absent}, which the device does not have"
            missing = [a for a in range(block.start, block.end) if a not in present]
            if missing:
                out.append(f"{block.table} {block.start}+{block.count}: spans unmapped {missing[0]}..{missing[-1]}")
    return out


def _check_values(reference: Reference, got: dict[str, Reading]) -> None:
    for row in reference.registers:
        reading = got[row.point]
        where = f"{reference.profile}.{row.point} ({row.table} {row.address}: {row.note})"
        if row.quality == "invalid":
            assert reading.quality is Quality.INVALID, where
            assert reading.value is None, where
            continue
        assert reading.quality is Quality.OK, where
        assert reading.value == row.value, f"{where}: decoded {reading.value!r}, reference {row.value!r}"
        assert type(reading.value) is type(row.value) or isinstance(row.value, float), where
        assert reading.unit == row.unit, f"{where}: unit {reading.unit!r}, reference {row.unit!r}"
        if row.text is not None:
            assert reading.text == row.text, f"{where}: label {reading.text!r}, reference {row.text!r}"


def test_every_new_profile_has_a_reference() -> None:
    shipped = set(shipped_profiles())
    assert set(NEW_PROFILES) <= shipped
    assert set(NEW_PROFILES) <= set(REFERENCES)
    assert set(REFERENCES) <= shipped, "a reference names a profile that is not shipped"


def test_every_shipped_profile_has_a_reference() -> None:
    """Issue 17: no shipped device profile goes without an independent reference (the
    simulator's own profile describes the simulator, not a device)."""
    assert set(shipped_profiles()) - {"sim-heatpump"} <= set(REFERENCES)


@pytest.mark.parametrize("name", NEW_PROFILES)
def test_profile_loads_plans_and_names_its_source(name: str) -> None:
    profile = load_profile(name)
    blocks = plan_profile(profile)
    planned = [p.name for b in blocks for p in b.points]
    assert sorted(planned) == sorted(p.name for p in profile.points)  # every point read exactly once
    text = (Path(__file__).parents[1] / "config" / "profiles" / f"{name}.toml").read_text()
    assert "# Source" in text and "Device limits" in text
    assert profile.device_type in ("energy-meter", "heat-pump")
    if profile.device_type == "heat-pump":
        kinds = {p.kind for p in profile.points}
        assert "fault" in kinds and "status" in kinds, "a heat pump profile must read its fault code and status"
    for point in profile.points:
        if point.writable:  # only where the reference gives bounds (written in the file's comments)
            assert point.min is not None and point.max is not None


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_rows_match_profile_points(name: str) -> None:
    """Each reference row is where the profile reads the point, with the point's width."""
    reference = REFERENCES[name]
    profile: Profile = load_profile(reference.profile)
    rows = {row.point: row for row in reference.registers}
    assert len(rows) == len(reference.registers), "a point appears twice in the reference"
    covered = set(rows) | set(reference.unverified)
    assert covered == {p.name for p in profile.points}, "every profile point needs a reference row"
    for point in profile.points:
        row = rows.get(point.name)
        if row is None:
            continue
        assert (point.table, point.address) == (row.table, row.address), f"{name}.{point.name}"
        assert len(row.words) == point.count, f"{name}.{point.name}: width"
        if row.type is not None:
            assert point.type == row.type, f"{name}.{point.name}: profile {point.type}, reference {row.type}"
        assert all(0 <= w <= 0xFFFF for w in row.words)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_reference_values_decoded_through_modbus_tcp(name: str) -> None:
    reference = REFERENCES[name]
    got = _poll(reference.profile, _image(reference, limits=False))
    _check_values(reference, got)


LIMITED = sorted(n for n, r in REFERENCES.items() if r.max_registers_per_request or r.unmapped_is_error)
KNOWN_LIMIT_DEFECTS: dict[str, str] = {}
"""Profiles known to break their device's limits: strict, so a fixed profile fails here until removed."""


def _limited_params() -> list[object]:
    return [
        pytest.param(n, marks=pytest.mark.xfail(strict=True, reason=KNOWN_LIMIT_DEFECTS[n]))
        if n in KNOWN_LIMIT_DEFECTS
        else n
        for n in LIMITED
    ]


@pytest.mark.parametrize("name", _limited_params())
def test_plan_respects_device_read_limits(name: str) -> None:
    reference = REFERENCES[name]
    image = _image(reference, limits=True)
    unverified = set(reference.unverified)
    blocks = plan_profile(load_profile(reference.profile))
    skipped = {(b.table, b.start) for b in blocks if {p.name for p in b.points} <= unverified}
    checked = [b for b in blocks if (b.table, b.start) not in skipped]
    assert _limit_violations(checked, reference, image) == []
    got = _poll(reference.profile, image)
    refused = [r for r in image.requests if r.exception_code and (r.table, r.start) not in skipped]
    assert refused == [], f"device refused: {refused}"
    _check_values(reference, got)


def test_image_server_enforces_limits() -> None:
    """The simulator itself: >80 registers -> exception 3, an unmapped register -> exception 2."""
    image = RegisterImage(
        words={"input": {a: a for a in range(100)}}, max_registers_per_request=80, unmapped_is_error=True
    )
    assert image.answer("input", 0, 80) == list(range(80))
    assert image.answer("input", 0, 81) == 3
    assert image.answer("input", 95, 6) == 2
    assert image.answer("holding", 0, 1) == 2
    assert [r.exception_code for r in image.requests] == [0, 3, 2, 2]
    assert image.requests[1] == ImageRequest("input", 0, 81, 3)
    lenient = RegisterImage(words={"input": {0: 1}}, fill_word=POISON_WORD)
    assert lenient.answer("input", 0, 2) == [1, POISON_WORD]
