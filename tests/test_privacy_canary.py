"""No identifier leaves the pipeline in any form: planted canaries are searched in every record."""

from __future__ import annotations

import base64
import hashlib
import json
import string

import msgspec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from heatgate.agent.config import Config, GatewayConfig
from heatgate.agent.privacy.config_audit import config_change_details
from heatgate.buffer.api import NewRecord
from heatgate.drivers.reading import PointKind, Quality, Reading
from tests.support.dictionary import Published, attack, postcode_neighbourhood, postcode_spellings
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState
from tests.support.privacy import T0, make_pipeline

FAULT_VALUES: list[int | str] = [0, 0, 7, 12, "E42"]
STATUS_VALUES: list[int | str] = ["heating", "idle", 1, 2]


def _forms(canary: str) -> set[str]:
    raw = canary.encode()
    forms = {canary, canary.replace(":", ""), canary.replace(":", "-"), canary.replace(" ", "")}
    for text in list(forms):
        data = text.encode()
        forms |= {
            data.hex(),
            base64.b64encode(data).decode().rstrip("="),
            base64.b32encode(data).decode().rstrip("="),
            base64.urlsafe_b64encode(data).decode().rstrip("="),
        }
    forms.add(raw.hex())
    return {f.lower() for f in forms if len(f) >= 6}


alnum = st.text(alphabet=string.ascii_uppercase + string.digits, min_size=8, max_size=12)
serials = alnum.map(lambda s: "SN" + s)
dsmr_ids = st.text(alphabet=string.digits, min_size=16, max_size=17).map(lambda d: ("E00" + d).encode().hex())
macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
home_ids = st.integers(min_value=0x10000000, max_value=0xFFFFFFFF)
dsk_blocks = st.lists(st.integers(0, 65535), min_size=8, max_size=8)
postcodes = st.tuples(st.integers(1000, 9999), st.text(alphabet="ABCEGHJKLMNPRSTVWXZ", min_size=2, max_size=2))

DEVICE_TYPES = ["heat-pump", "energy-meter", "smart-meter", "multisensor"]
POINTS = {
    PointKind.MEASUREMENT: ["flow_temp_c", "power_w", "humidity_pct"],
    PointKind.COUNTER: ["energy_kwh", "gas_m3", "starts"],
    PointKind.STATUS: ["mode", "compressor"],
    PointKind.FAULT: ["fault_code"],
}


@st.composite
def scenario(draw: st.DrawFn) -> tuple[list[Reading], list[str], str]:
    canaries: list[str] = []
    readings: list[Reading] = []
    postcode_digits, letters = draw(postcodes)
    postcode = f"{postcode_digits} {letters}"
    canaries.append(postcode)
    for index in range(draw(st.integers(1, 4))):
        device_type = draw(st.sampled_from(DEVICE_TYPES))
        source, device = f"src{index}", f"dev{index}"
        identifiers = {
            "serial_number": draw(serials),
            "equipment_id": draw(dsmr_ids),
            "mac_address": draw(macs),
        }
        home_id = draw(home_ids)
        canaries.extend(identifiers.values())
        canaries.extend([f"{home_id:08x}", str(home_id), bytes.fromhex(identifiers["equipment_id"]).decode()])
        ts = T0 + draw(st.floats(0, 3 * 86400))
        identifying: list[tuple[str, str | int]] = [*identifiers.items(), ("home_id", home_id)]
        for point, identifier in identifying:
            readings.append(
                Reading(
                    source=source,
                    device=device,
                    device_type=device_type,
                    point=point,
                    kind=PointKind.IDENTIFIER,
                    value=identifier,
                    ts=ts,
                )
            )
        for _ in range(draw(st.integers(5, 40))):
            kind = draw(st.sampled_from(list(POINTS)))
            point = draw(st.sampled_from(POINTS[kind]))
            ts += draw(st.floats(1, 4000))
            if kind is PointKind.FAULT:
                value: float | int | str = draw(st.sampled_from(FAULT_VALUES))
            elif kind is PointKind.STATUS:
                value = draw(st.sampled_from(STATUS_VALUES))
            else:
                value = draw(st.one_of(st.integers(0, 10**6), st.floats(-50, 1e5, allow_nan=False)))
            quality = draw(st.sampled_from([Quality.OK, Quality.OK, Quality.OK, Quality.COMM_ERROR]))
            readings.append(
                Reading(
                    source=source,
                    device=device,
                    device_type=device_type,
                    point=point,
                    kind=kind,
                    value=value if quality is Quality.OK else None,
                    ts=ts,
                    quality=quality,
                    text="label" if kind is PointKind.FAULT else None,
                )
            )
    readings.extend(draw(zwavejs_controller(canaries)))
    return readings, canaries, postcode


def dsk_forms(blocks: list[int]) -> list[str]:
    """An S2 DSK in the forms it is written (label, QR code, zwave-js's display without the PIN,
    the 16 key bytes in hex); the PIN alone (5 digits) is too short to search for."""
    dashed = "-".join(f"{b:05d}" for b in blocks)
    return [
        dashed,
        dashed.replace("-", ""),
        dashed.split("-", 1)[1],
        b"".join(b.to_bytes(2, "big") for b in blocks).hex(),
    ]


@st.composite
def zwavejs_controller(draw: st.DrawFn, canaries: list[str]) -> list[Reading]:
    """What the zwave-js source reads of its network: the controller's home id as it emits it
    (8 hex digits, device ``controller``), and a device's S2 DSK as an identifier, in case any
    reading ever carries one. Both are canaries in every form."""
    home_id = draw(home_ids)
    blocks = draw(dsk_blocks)
    canaries.extend([f"{home_id:08x}", str(home_id), *dsk_forms(blocks)])
    ts = T0 + draw(st.floats(0, 86400))
    return [
        Reading(
            source="zw",
            device="controller",
            device_type="zwave-controller",
            point="home_id",
            kind=PointKind.IDENTIFIER,
            value=f"{home_id:08x}",
            ts=ts,
        ),
        Reading(
            source="zw",
            device="living-room",
            device_type="room-sensor",
            point="s2_dsk",
            kind=PointKind.IDENTIFIER,
            value="-".join(f"{b:05d}" for b in blocks),
            ts=ts,
        ),
        Reading(
            source="zw",
            device="living-room",
            device_type="room-sensor",
            point="air_temperature_c",
            kind=PointKind.MEASUREMENT,
            value=21.5,
            unit="°C",
            ts=ts + 1,
        ),
    ]


GATEWAY_ID = "gw-canary-7781"


def _config(postcode: str) -> Config:
    return Config(gateway=GatewayConfig(id=GATEWAY_ID, region=postcode))


def _published(readings: list[Reading], postcode: str, chunk: int) -> list[NewRecord]:
    """Every record the pipeline makes of ``readings``, and two agent.start audits with the
    config details (first start, then unchanged)."""
    store = MemoryState()
    pipeline = make_pipeline(region=postcode, gateway_id=GATEWAY_ID, store=store)
    records = []
    for start in range(0, len(readings), chunk):
        records.extend(pipeline.process(readings[start : start + chunk]))
    records.extend(pipeline.flush(T0 + 10 * 86400))
    records.extend(pipeline.flush(force=True))
    for _run in range(2):
        details = run_async(config_change_details(store, _config(postcode)))
        records.append(pipeline.audit("agent.start", "agent", "info", details={"sources": 3, **details}))
    records.append(pipeline.connectivity("source_down", "src0", "timeout"))
    return records


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario(), st.integers(1, 7))
def test_no_canary_in_any_record_in_any_form(case: tuple[list[Reading], list[str], str], chunk: int) -> None:
    readings, canaries, postcode = case
    records = _published(readings, postcode, chunk)
    assert records, "the scenario produced no records at all"
    forms = {form for canary in canaries for form in _forms(canary)}
    forms.add(GATEWAY_ID.lower())
    for record in records:
        haystack = (record.route + "\n").encode().lower() + record.payload.lower()
        for form in forms:
            assert form.encode() not in haystack, f"{form!r} leaked in {record.stream} {record.route}"
        body = json.loads(record.payload)
        if record.stream == "analytics":
            assert set(body) <= {
                *("type", "subject", "device_type", "region", "point", "agg", "value", "hour"),
                *("samples", "sum", "min", "max"),
            }
            assert body["region"] in {postcode[:2], "unknown"}
            assert body["hour"].endswith(":00:00Z")
            assert "/" not in record.route.removeprefix("analytics/")
        if record.stream == "service":
            assert body["device"].startswith("dev") or body["device"] in ("controller", "living-room")


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_no_postcode_by_dictionary_attack_on_any_published_byte(case: tuple[list[Reading], list[str], str]) -> None:
    """As the outside review did: hash every candidate of the planted postcode's neighbourhood
    (its spellings, and the config document with the candidate in it) with the common digests
    and HMACs under keys an attacker knows; no form of any digest is in any published byte."""
    readings, _canaries, postcode = case
    records = _published(readings, postcode, 3)
    published = Published(r.route.encode() + b"\n" + r.payload for r in records)
    document = msgspec.json.encode(_config(postcode))
    neighbourhood = postcode_neighbourhood(postcode, digit_radius=1)
    assert postcode in neighbourhood

    def preimages(candidate: str) -> list[bytes]:
        return [*postcode_spellings(candidate), document.replace(postcode.encode(), candidate.encode())]

    assert attack(published, neighbourhood, preimages, hmac_keys=[b"", GATEWAY_ID.encode()]) == []


def test_the_dictionary_attack_finds_an_unkeyed_digest() -> None:
    """The attack is sharp: the SHA-256 of the config (what agent.start once carried), or a
    truncated hash of the postcode, is found."""
    postcode = "3511 AB"
    document = msgspec.json.encode(_config(postcode))
    neighbourhood = postcode_neighbourhood(postcode, digit_radius=1)

    def preimages(candidate: str) -> list[bytes]:
        return [*postcode_spellings(candidate), document.replace(postcode.encode(), candidate.encode())]

    leaked = json.dumps({"details": {"config_sha256": hashlib.sha256(document).hexdigest()}}).encode()
    assert attack(Published([leaked]), neighbourhood, preimages) == [postcode]
    truncated = hashlib.md5(b"3511ab").hexdigest()[:16].encode()
    assert attack(Published([b"subject=" + truncated]), neighbourhood, preimages) == [postcode]


def test_canary_forms_cover_what_the_search_claims() -> None:
    forms = _forms("aa:bb:cc:dd:ee:ff")
    assert "aabbccddeeff" in forms and "aa-bb-cc-dd-ee-ff" in forms
    assert base64.b64encode(b"aa:bb:cc:dd:ee:ff").decode().rstrip("=").lower() in forms
    assert b"aabbccddeeff".hex() in forms


def test_dsk_forms_cover_label_qr_and_display() -> None:
    blocks = [12345, 6789, 65535, 0, 1, 22222, 33333, 44444]
    forms = dsk_forms(blocks)
    assert forms[0] == "12345-06789-65535-00000-00001-22222-33333-44444"
    assert forms[1] == "1234506789655350000000001222223333344444"  # as in a SmartStart QR code
    assert forms[2] == "06789-65535-00000-00001-22222-33333-44444"  # zwave-js shows it without the PIN
    assert forms[3] == "3039" + "1a85" + "ffff" + "0000" + "0001" + "56ce" + "8235" + "ad9c"
