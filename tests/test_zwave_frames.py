"""Z-Wave Serial API framer and command-class decoders: known vectors and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heatgate.drivers.reading import PointKind
from heatgate.drivers.zwave import commandclasses as cc
from heatgate.drivers.zwave import frames
from heatgate.drivers.zwave.frames import Control, DataFrame, FrameType, ZwaveFrameError
from heatgate.drivers.zwave.source import parse_application_command

# GetControllerId request and a soft reset, as captured from a Z-Stick (zwave-js logs).
GET_ID = bytes.fromhex("01030020dc")
SOFT_RESET = bytes.fromhex("01030008f4")


def test_known_frames_encode_and_checksum() -> None:
    assert frames.encode(DataFrame(FrameType.REQUEST, 0x20)) == GET_ID
    assert frames.encode(DataFrame(FrameType.REQUEST, 0x08)) == SOFT_RESET
    assert frames.checksum(bytes.fromhex("030020")) == 0xDC
    assert frames.decode(GET_ID) == (5, DataFrame(FrameType.REQUEST, 0x20, b""))
    resp = bytes.fromhex("01080120e3a1c0de01") + bytes([frames.checksum(bytes.fromhex("080120e3a1c0de01"))])
    assert frames.decode(resp) == (10, DataFrame(FrameType.RESPONSE, 0x20, bytes.fromhex("e3a1c0de01")))


def test_control_bytes_partial_and_garbage() -> None:
    assert frames.decode(b"\x06\x01") == (1, Control.ACK)
    assert frames.decode(b"\x15") == (1, Control.NAK)
    assert frames.decode(b"\x18") == (1, Control.CAN)
    assert frames.decode(GET_ID[:4]) == (0, None)
    assert frames.decode(b"\xaa\xbb\x01\x03") == (2, None)
    assert frames.decode(b"\x01\x02\x00") == (1, None)  # length below the minimum: not a start


def test_bad_checksum_raises_with_consumed() -> None:
    with pytest.raises(frames.ZwaveChecksumError) as info:
        frames.decode(GET_ID[:-1] + b"\x00" + GET_ID)
    assert info.value.consumed == 5 and info.value.expected == 0xDC


def _run(data: bytes) -> tuple[list[DataFrame | Control], int, int]:
    out: list[DataFrame | Control] = []
    errors = garbage = 0
    buf = bytearray(data)
    while buf:
        try:
            consumed, frame = frames.decode(buf)
        except ZwaveFrameError as exc:
            assert 0 < exc.consumed <= len(buf)
            del buf[: exc.consumed]
            errors += 1
            continue
        if consumed == 0:
            break
        del buf[:consumed]
        if frame is None:
            garbage += consumed
        else:
            out.append(frame)
    return out, errors, garbage


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=600))
def test_decode_never_raises_other_errors_nor_overconsumes(data: bytes) -> None:
    try:
        consumed, _ = frames.decode(data)
    except ZwaveFrameError as exc:
        assert 0 < exc.consumed <= len(data)
        return
    assert 0 <= consumed <= len(data)


@settings(max_examples=200, deadline=None)
@given(
    st.binary(max_size=200).filter(lambda b: not set(b) & {0x01, 0x06, 0x15, 0x18}),
    st.sampled_from([0x00, 0x01]),
    st.integers(0, 255),
    st.binary(max_size=40),
)
def test_resyncs_after_garbage(garbage: bytes, kind: int, function: int, payload: bytes) -> None:
    frame = DataFrame(FrameType(kind), function, payload)
    out, errors, skipped = _run(garbage + frames.encode(frame))
    assert out == [frame] and errors == 0 and skipped == len(garbage)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from([0x00, 0x01]), st.integers(0, 255), st.binary(max_size=252))
def test_encode_decode_round_trip(kind: int, function: int, payload: bytes) -> None:
    frame = DataFrame(FrameType(kind), function, payload)
    data = frames.encode(frame)
    assert frames.decode(data + b"\x06") == (len(data), frame)


def _one(command: bytes) -> cc.PointValue:
    decoded = cc.decode_command(command)
    assert isinstance(decoded, list)
    return decoded[0]


def test_multilevel_sensor_vectors() -> None:
    v = _one(bytes.fromhex("3105012200cd"))  # air temperature, precision 1, 2 bytes: 20.5 °C
    assert (v.point, v.value, v.unit, v.kind) == ("air_temperature_c", 20.5, "°C", PointKind.MEASUREMENT)
    assert _one(bytes.fromhex("310501 2aff38".replace(" ", ""))).value == -20.0  # °F scale 1, prec 1
    assert _one(bytes.fromhex("310501 2aff38".replace(" ", ""))).point == "air_temperature_f"
    assert (_one(bytes.fromhex("3105050132")).point, _one(bytes.fromhex("3105050132")).value) == ("humidity_pct", 50)


def test_meter_vectors_v1_to_v4() -> None:
    v1 = _one(bytes.fromhex("3202014400012345"))  # v1 electric, kWh, precision 2, 4 bytes
    assert (v1.point, v1.value, v1.kind, v1.unit) == ("energy_kwh", 745.65, PointKind.COUNTER, "kWh")
    v3 = _one(bytes.fromhex("320221520bb80000"))  # import rate, W, precision 2, 2 bytes, delta 0
    assert (v3.point, v3.value, v3.kind) == ("power_w", 30.0, PointKind.MEASUREMENT)
    export = _one(bytes.fromhex("3202414400000064003c00000032"))  # export rate kWh, delta 60, previous
    assert (export.point, export.value) == ("energy_returned_kwh", 1.0)
    v4 = _one(bytes.fromhex("3202a17901001e0001"))  # scale 7 (bit 7 + 0b11), 1 byte, delta 30, prev, scale2 1
    assert (v4.point, v4.unit, v4.kind) == ("reactive_energy_kvarh", "kVarh", PointKind.COUNTER)
    gas = _one(bytes.fromhex("3202224203e80000"))  # gas, m3, precision 2, 2 bytes: 10.00 m3
    assert (gas.point, gas.value, gas.unit) == ("gas_m3", 10.0, "m3")


def test_battery_notification_and_security() -> None:
    assert _one(bytes.fromhex("800355")).value == 85
    low = _one(bytes.fromhex("8003ff"))
    assert (low.point, low.value, low.kind) == ("battery_low", 1, PointKind.STATUS)
    motion = _one(bytes.fromhex("7105000000ff070800"))  # v1 type, level, reserved, status, type, event
    assert (motion.point, motion.value, motion.text) == ("home_security_event", 8, "motion detected")
    assert cc.decode_command(bytes.fromhex("9f0301")) == cc.SecureEncapsulated(0x9F)
    assert cc.decode_command(bytes.fromhex("9881aabb")) == cc.SecureEncapsulated(0x98)
    assert cc.decode_command(bytes.fromhex("2503ff")) == cc.Unsupported(0x25, 0x03)


@pytest.mark.parametrize("bad", ["31", "3105", "310501", "31050123", "32020144", "8003c8", ""])
def test_malformed_reports_raise_command_error(bad: str) -> None:
    with pytest.raises(cc.CommandClassError):
        cc.decode_command(bytes.fromhex(bad))


@settings(max_examples=400, deadline=None)
@given(st.sampled_from([0x31, 0x32, 0x71, 0x80, 0x98, 0x9F, 0x20]), st.binary(max_size=20))
def test_command_decoders_raise_only_command_error(cls: int, rest: bytes) -> None:
    try:
        cc.decode_command(bytes([cls]) + rest)
    except cc.CommandClassError:
        pass


def test_application_and_bridge_command_carriers() -> None:
    app = DataFrame(FrameType.REQUEST, 0x04, bytes.fromhex("0002038003 55".replace(" ", "")))
    bridge = DataFrame(FrameType.REQUEST, 0xA8, bytes.fromhex("000103038003 5500".replace(" ", "")))
    for frame in (app, bridge):
        carried = parse_application_command(frame)
        assert carried is not None
        assert carried.node_id in (2, 3) and carried.command == bytes.fromhex("800355")
    assert parse_application_command(DataFrame(FrameType.REQUEST, 0x49, b"\x00")) is None
    with pytest.raises(frames.ZwaveError):
        parse_application_command(DataFrame(FrameType.REQUEST, 0x04, bytes.fromhex("000205800355")))
