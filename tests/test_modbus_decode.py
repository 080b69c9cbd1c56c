"""Pure parts of the Modbus driver: decoding, planning, profiles."""

from __future__ import annotations

import math
import struct
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.drivers.modbus.decode import RegisterType, decode_words, encode_value, words_to_bytes
from heatgate.drivers.modbus.errors import DecodeError
from heatgate.drivers.modbus.planner import MAX_REGISTERS, Block, block_cost_bytes, plan_points, plan_profile
from heatgate.drivers.modbus.profile import Point, Unreadable, load_profile, shipped_profiles
from heatgate.drivers.modbus.values import point_value, raw_for_write
from heatgate.drivers.reading import Quality
from heatgate.typedload import ConfigError

ORDERS = st.sampled_from(["big", "little"])
INT_RANGES = {
    "u16": (0, 2**16 - 1),
    "s16": (-(2**15), 2**15 - 1),
    "u32": (0, 2**32 - 1),
    "s32": (-(2**31), 2**31 - 1),
    "u64": (0, 2**64 - 1),
    "s64": (-(2**63), 2**63 - 1),
}


def test_known_vectors() -> None:
    assert decode_words([0x4248, 0x0000], "f32") == 50.0
    assert decode_words([0x0000, 0x4248], "f32", word_order="little") == 50.0
    assert decode_words([0x4842, 0x0000], "f32", byte_order="little") == 50.0
    assert decode_words([0xFFFF], "s16") == -1
    assert decode_words([0x0001, 0x0002], "u32") == 0x00010002
    assert decode_words([0x0001, 0x0002], "u32", word_order="little") == 0x00020001
    assert decode_words([0, 0, 0, 1], "u64") == 1
    assert decode_words([0x4148, 0x4700], "string") == "AHG"
    assert decode_words([0x4841], "string", byte_order="little") == "AH"
    assert decode_words([0x0005], "bits") == 5


@given(type_=st.sampled_from(sorted(INT_RANGES)), data=st.data(), wo=ORDERS, bo=ORDERS)
def test_integers_round_trip(type_: str, data: st.DataObject, wo: str, bo: str) -> None:
    lo, hi = INT_RANGES[type_]
    value = data.draw(st.integers(lo, hi))
    words = encode_value(value, type_, word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    assert all(0 <= w <= 0xFFFF for w in words)
    assert decode_words(words, type_, word_order=wo, byte_order=bo) == value  # type: ignore[arg-type]


@given(value=st.floats(allow_nan=False, width=32), wo=ORDERS, bo=ORDERS)
def test_f32_round_trip(value: float, wo: str, bo: str) -> None:
    words = encode_value(value, "f32", word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    assert decode_words(words, "f32", word_order=wo, byte_order=bo) == value  # type: ignore[arg-type]


@given(value=st.floats(allow_nan=False), wo=ORDERS, bo=ORDERS)
def test_f64_round_trip_and_layout(value: float, wo: str, bo: str) -> None:
    words = encode_value(value, "f64", word_order=wo, byte_order=bo)  # type: ignore[arg-type]
    assert decode_words(words, "f64", word_order=wo, byte_order=bo) == value  # type: ignore[arg-type]
    assert words_to_bytes(words, wo, bo) == struct.pack(">d", value)  # type: ignore[arg-type]


@given(text=st.text(alphabet=st.characters(min_codepoint=33, max_codepoint=126), max_size=16), bo=ORDERS)
def test_string_round_trip(text: str, bo: str) -> None:
    words = encode_value(text, "string", byte_order=bo, length=8)  # type: ignore[arg-type]
    assert len(words) == 8
    assert decode_words(words, "string", byte_order=bo) == text  # type: ignore[arg-type]


@given(
    words=st.lists(st.integers(-5, 0x1FFFF), max_size=6),
    type_=st.sampled_from(["u16", "s16", "u32", "s32", "u64", "s64", "f32", "f64", "string", "bits"]),
)
def test_decoder_raises_only_its_own_error(words: list[int], type_: str) -> None:
    try:
        decode_words(words, type_)
    except DecodeError:
        pass


def test_invalid_sentinel_and_nan_give_quality_not_value() -> None:
    sentinel = Point(name="t", address=0, type="s16", scale=0.1, invalid=-32768)
    assert point_value(sentinel, [0x8000]).quality is Quality.INVALID
    assert point_value(sentinel, [0x8000]).value is None
    assert point_value(sentinel, [215]).value == 21.5
    nan = Point(name="f", address=0, type="f32")
    assert point_value(nan, encode_value(math.nan, "f32")).quality is Quality.INVALID
    coded = Point(name="c", address=0, kind="fault", values={"101": "high pressure"})
    assert point_value(coded, [101]).text == "high pressure"
    assert point_value(coded, [7]).text is None


def test_write_bounds_and_encoding() -> None:
    point = Point(name="sp", address=10, type="s16", scale=0.1, writable=True, min=20, max=60)
    assert raw_for_write(point, 42.5) == [425]
    with pytest.raises(ValueError):
        raw_for_write(point, 60.1)
    with pytest.raises(ValueError):
        raw_for_write(Point(name="ro", address=0), 1)


# -- planner -------------------------------------------------------------------------------------


def _brute_force(points: list[Point], unreadable: list[Unreadable], overhead: int) -> tuple[float, int]:
    """Minimum cost (and the fewest requests at that cost) over every set partition."""
    best = (math.inf, 10**9)

    def partitions(items: list[Point]) -> list[list[list[Point]]]:
        if not items:
            return [[]]
        first, rest = items[0], items[1:]
        out = []
        for part in partitions(rest):
            for i in range(len(part)):
                out.append([*part[:i], [first, *part[i]], *part[i + 1 :]])
            out.append([[first], *part])
        return out

    for part in partitions(points):
        cost, ok = 0, True
        for group in part:
            start = min(p.address for p in group)
            end = max(p.end for p in group)
            if end - start > MAX_REGISTERS or any(u.start <= end - 1 and start <= u.end for u in unreadable):
                ok = False
                break
            cost += block_cost_bytes("holding", end - start, overhead)
        if ok and (cost, len(part)) < best:
            best = (cost, len(part))
    return best


@st.composite
def small_maps(draw: st.DrawFn) -> tuple[list[Point], list[Unreadable]]:
    n = draw(st.integers(1, 6))
    points, address = [], draw(st.integers(0, 20))
    for i in range(n):
        type_: RegisterType = draw(st.sampled_from(["u16", "u32", "u64"]))
        points.append(Point(name=f"p{i}", address=address, type=type_))
        address += {"u16": 1, "u32": 2, "u64": 4}[type_] + draw(st.sampled_from([0, 0, 1, 3, 10, 30, 90]))
    unreadable = []
    if draw(st.booleans()):
        # A hole strictly between two points.
        i = draw(st.integers(0, max(0, n - 2)))
        if i + 1 < n and points[i + 1].address > points[i].end:
            unreadable.append(Unreadable(table="holding", start=points[i].end, end=points[i].end))
    return points, unreadable


@settings(max_examples=150, deadline=None)
@given(small_maps(), st.sampled_from([0, 10, 40, 10_000]))
def test_planner_matches_brute_force_optimum(case: tuple[list[Point], list[Unreadable]], overhead: int) -> None:
    points, unreadable = case
    blocks = plan_points(points, unreadable=unreadable, overhead_bytes=overhead)
    cost = sum(block_cost_bytes("holding", b.count, overhead) for b in blocks)
    best_cost, best_requests = _brute_force(points, unreadable, overhead)
    assert cost == best_cost
    if overhead == 10_000:  # requests dominate: the planner needs no more requests than the optimum
        assert len(blocks) == best_requests
    _check_blocks(blocks, points, unreadable)


def _check_blocks(blocks: list[Block], points: list[Point], unreadable: list[Unreadable]) -> None:
    covered = [p.name for b in blocks for p in b.points]
    assert sorted(covered) == sorted(p.name for p in points)
    for b in blocks:
        assert b.count <= MAX_REGISTERS
        assert all(b.start <= p.address and p.end <= b.end for p in b.points)
        assert not any(u.start < b.end and b.start <= u.end for u in unreadable)


def test_planner_splits_long_maps_at_125_registers() -> None:
    points = [Point(name=f"p{i}", address=i * 2, type="u32") for i in range(100)]
    blocks = plan_points(points)
    assert len(blocks) == 2
    assert max(b.count for b in blocks) <= 125


def test_shipped_profiles_load_and_plan() -> None:
    assert {"sim-heatpump", "sdm630", "nibe-s"} <= set(shipped_profiles())
    hp = load_profile("sim-heatpump")
    blocks = plan_profile(hp)
    # The reserved input registers 27-29 are never read.
    assert not any(b.table == "input" and b.start <= 29 and b.end > 27 for b in blocks)
    assert {p.type for p in hp.points} >= {"u16", "s16", "u32", "s32", "u64", "s64", "f32", "f64", "string", "bits"}


def test_profile_errors_are_located(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(
        'name = "bad"\ndevice_type = "heat-pump"\n'
        '[[points]]\nname = "a"\naddress = 0\n'
        '[[points]]\nname = "b"\naddress = 1\ntype = "u17"\n'
        '[[points]]\nname = "c"\naddress = 4\nwritable = true\n'
        '[[points]]\nname = "a"\naddress = 3\ntype = "u32"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_profile(str(bad))
    paths = [i.path for i in info.value.issues]
    assert "points[1].type" in paths and "points[2].writable" in paths
    overlap = tmp_path / "overlap.toml"
    overlap.write_text(
        'name = "o"\ndevice_type = "x"\n[[points]]\nname = "a"\naddress = 0\ntype = "u32"\n'
        '[[points]]\nname = "a"\naddress = 1\n'
    )
    with pytest.raises(ConfigError) as info:
        load_profile(str(overlap))
    assert {i.path for i in info.value.issues} == {"points[1].name", "points[1].address"}
    with pytest.raises(ConfigError):
        load_profile("no-such-profile")


def test_brute_force_helper_is_exhaustive() -> None:
    # Sanity of the oracle itself: a far gap must split.
    points = [Point(name="a", address=0), Point(name="b", address=200)]
    assert _brute_force(points, [], 40) == (block_cost_bytes("holding", 1) * 2, 2)


# -- planner with a device's read limits ------------------------------------------------------------


def _brute_force_limited(points: list[Point], max_registers: int, even: bool, overhead: int) -> float:
    """Minimum cost over every partition into contiguous runs under the limits (padding after
    an odd run, else before it; a padded request must fit the limit too)."""
    from heatgate.drivers.modbus.planner import block_extent

    ordered = sorted(points, key=lambda p: p.address)
    best = math.inf
    n = len(ordered)
    for mask in range(1 << (n - 1)):  # a cut after point i where bit i is set
        cost, ok, first = 0, True, 0
        for i in range(n):
            if i == n - 1 or mask >> i & 1:
                start, end = ordered[first].address, ordered[i].end
                extent = block_extent("holding", start, end, [], even_count=even)
                if extent is None or extent[1] > max_registers:
                    ok = False
                    break
                cost += block_cost_bytes("holding", extent[1], overhead)
                first = i + 1
        if ok:
            best = min(best, cost)
    return best


@settings(max_examples=150, deadline=None)
@given(small_maps(), st.integers(4, 40), st.booleans(), st.sampled_from([0, 10, 40]))
def test_planner_honours_read_limits_at_the_optimum(
    case: tuple[list[Point], list[Unreadable]], max_registers: int, even: bool, overhead: int
) -> None:
    points, _ = case
    blocks = plan_points(points, max_registers=max_registers, even_count=even, overhead_bytes=overhead)
    for b in blocks:
        assert b.count <= max_registers
        assert not even or b.count % 2 == 0
        assert all(b.start <= p.address and p.end <= b.end for p in b.points)
    assert sorted(p.name for b in blocks for p in b.points) == sorted(p.name for p in points)
    cost = sum(block_cost_bytes("holding", b.count, overhead) for b in blocks)
    assert cost == _brute_force_limited(points, max_registers, even, overhead)
