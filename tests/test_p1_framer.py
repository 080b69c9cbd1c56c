"""P1 framer, CRC and telegram decoding: known vectors and hypothesis properties."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.drivers.p1 import framer
from heatgate.drivers.p1.crc import crc16_arc
from heatgate.drivers.p1.errors import P1ChecksumError, P1ParseError
from heatgate.drivers.p1.telegram import P1Decoder
from heatgate.drivers.reading import PointKind
from heatgate.drivers.sim.p1_telegram import MeterState, build_telegram

NOW = 1_700_000_000.0
V5 = build_telegram("5", MeterState(), NOW)
V2 = build_telegram("2.2", MeterState(), NOW)


def frames_of(data: bytes) -> tuple[list[bytes], int, bytes]:
    """Run the framer to exhaustion: (frames, garbage bytes, unconsumed rest)."""
    frames: list[bytes] = []
    garbage = 0
    buf = bytearray(data)
    while buf:
        consumed, frame = framer.decode(buf)
        if consumed == 0:
            break
        del buf[:consumed]
        if frame is None:
            garbage += consumed
        else:
            frames.append(frame)
    return frames, garbage, bytes(buf)


def test_crc16_arc_known_vectors() -> None:
    assert crc16_arc(b"123456789") == 0xBB3D  # the CRC catalogue's check value for CRC-16/ARC
    assert crc16_arc(b"") == 0
    # A telegram published in the DSMR 5.0.2 P1 companion standard's example (body ends in "!").
    from dsmr_parser.parsers import TelegramParser

    body = V5[: V5.rindex(b"!") + 1]
    assert crc16_arc(body) == TelegramParser.crc16(body.decode()) == int(V5[-6:-2], 16)


def test_framer_cuts_both_endings_and_needs_more_for_partial() -> None:
    assert framer.decode(V5) == (len(V5), V5)
    assert framer.decode(V2) == (len(V2), V2)
    for cut in (1, len(V5) // 2, len(V5) - 7, len(V5) - 1):
        assert framer.decode(V5[:cut]) == (0, None)


def test_framer_skips_leading_garbage_and_truncated_telegrams() -> None:
    data = b"noise\x00\xff" + V5[:300] + V5 + b"!!\r\n" + V2
    frames, garbage, rest = frames_of(data)
    assert frames == [V5, V2]
    assert garbage == 7 + 300 + 4
    assert rest == b""


def test_framer_rejects_wrong_number_of_crc_digits() -> None:
    bad = V5[: V5.rindex(b"!") + 1] + b"AB\r\n"
    frames, garbage, _ = frames_of(bad + V5)
    assert frames == [V5] and garbage == len(bad)


def test_framer_bounds_an_endless_telegram() -> None:
    endless = b"/" + b"x" * (framer.MAX_TELEGRAM_BYTES + 100)
    consumed, frame = framer.decode(endless)
    assert frame is None and 0 < consumed <= len(endless)
    frames, _, rest = frames_of(endless + V5)
    assert frames == [V5] and rest == b""


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=3000))
def test_framer_never_raises_and_never_overconsumes(data: bytes) -> None:
    consumed, frame = framer.decode(data)
    assert 0 <= consumed <= len(data)
    if frame is not None:
        assert data[:consumed] == frame and frame.startswith(b"/") and frame.endswith(b"\n")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=500).filter(lambda b: b"/" not in b), st.binary(max_size=500))
def test_framer_resyncs_after_garbage(garbage: bytes, tail: bytes) -> None:
    frames, _, _ = frames_of(garbage + V5 + tail)
    assert frames[0] == V5


def test_decoder_maps_points_kinds_units_and_gas_timestamp() -> None:
    state = MeterState(equipment_id="4B414E415259", gas_ts=NOW - 300)
    readings = P1Decoder("5", source="sm").decode(build_telegram("5", state, NOW), received_ts=0.0)
    by_point = {r.point: r for r in readings}
    assert by_point["energy_delivered_t1_kwh"].value == pytest.approx(state.delivered_t1_kwh)
    assert by_point["energy_delivered_t1_kwh"].kind is PointKind.COUNTER
    assert by_point["energy_returned_t2_kwh"].value == pytest.approx(23.456)
    assert by_point["power_delivered_kw"].kind is PointKind.MEASUREMENT
    assert by_point["power_delivered_kw"].unit == "kW"
    assert by_point["voltage_l1_v"].value == pytest.approx(230.1)
    assert by_point["tariff"].kind is PointKind.STATUS and by_point["tariff"].text == "normal"
    assert by_point["power_failures"].value == 4 and by_point["long_power_failures"].value == 2
    ident = by_point["equipment_id"]
    assert (ident.kind, ident.value, ident.device) == (PointKind.IDENTIFIER, "4B414E415259", "meter")
    assert by_point["energy_delivered_t1_kwh"].ts == NOW  # the meter's own timestamp
    gas = by_point["gas_delivered_m3"]
    assert (gas.device, gas.device_type, gas.kind) == ("gas", "gas-meter", PointKind.COUNTER)
    assert gas.ts == NOW - 300
    assert by_point["gas_equipment_id"].kind is PointKind.IDENTIFIER


@pytest.mark.parametrize("version", ["2.2", "3", "4", "5"])
def test_each_version_parses_its_own_telegram(version: str) -> None:
    readings = P1Decoder(version, source="sm").decode(
        build_telegram(version, MeterState(), NOW), received_ts=time.time()
    )
    points = {r.point for r in readings}
    assert {"energy_delivered_t2_kwh", "power_delivered_kw", "equipment_id", "gas_delivered_m3"} <= points


def test_bad_crc_raises_checksum_error_with_fields() -> None:
    with pytest.raises(P1ChecksumError) as info:
        P1Decoder("5", source="sm").decode(build_telegram("5", MeterState(), NOW, bad_crc=True), received_ts=0)
    assert info.value.expected != info.value.actual
    assert info.value.actual == crc16_arc(V5[: V5.rindex(b"!") + 1])


@settings(max_examples=100, deadline=None)
@given(st.integers(min_value=1, max_value=len(V5) - 8), st.integers(min_value=0, max_value=255))
def test_corrupted_telegram_is_rejected_by_the_crc(position: int, byte: int) -> None:
    if V5[position] == byte:
        return
    corrupted = V5[:position] + bytes([byte]) + V5[position + 1 :]
    try:
        P1Decoder("5", source="sm").decode(corrupted, received_ts=0)
    except P1ParseError:
        return
    pytest.fail("a corrupted telegram was accepted")
