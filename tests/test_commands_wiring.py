"""The wiring helpers over the real parts: privacy rights through the real pipeline and the real
encrypted buffer (audit records committed to the security stream), bounds from the shipped
simulated heat pump's profile."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from heatgate.agent.command_wiring import WritableDevice, build_processor, command_hook
from heatgate.agent.commands import reasons
from heatgate.agent.commands.dispatch import CommandProcessor, Response, decode_response
from heatgate.agent.commands.envelope import b64url_decode, b64url_encode, encode_envelope
from heatgate.agent.commands.keys import raw_public
from heatgate.agent.commands.nonces import NonceStore
from heatgate.agent.commands.seal import open_sealed
from heatgate.agent.commands.sign import sign_approval, sign_envelope
from heatgate.agent.commands.verify import CommandVerifier
from heatgate.agent.commands.wiring import (
    answer,
    device_write_handler,
    pipeline_audit_sink,
    privacy_handlers,
    profile_write_bounds,
)
from heatgate.agent.config import GatewayConfig, KeysConfig
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.policy import STREAMS, load_policy
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.state import PrivacyState
from heatgate.buffer.adapter import open_buffer
from heatgate.config import data_path
from heatgate.drivers.modbus.profile import load_profile
from tests.support.commands import GATEWAY, NOW_S, Clock, Keys, answered
from tests.support.leaks import run_async

KEYS = Keys()
RECIPIENT = X25519PrivateKey.generate()


def signed(command: str, **args: Any) -> bytes:
    return encode_envelope(sign_envelope(KEYS.command, target=GATEWAY, command=command, args=args, issued_at=NOW_S))


def test_privacy_commands_over_the_real_pipeline_and_buffer(tmp_path: Path) -> None:
    clock = Clock()

    async def go() -> tuple[list[Response], list[dict[str, Any]], frozenset[str], list[tuple[str, bytes, Any]]]:
        buffer = await open_buffer(
            tmp_path / "b.db",
            bytes(32),
            cap_bytes=16 << 20,
            clock=clock,
            retention_s={s: 180 * 86400.0 for s in STREAMS},
            commit_interval_s=0.02,
        )
        try:
            state = await PrivacyState.load(buffer, clock=clock)
            keys = await PseudonymKeys.load(buffer, clock=clock)
            pipeline = Pipeline(
                load_policy(data_path("privacy.toml")),
                keys=keys,
                state=state,
                clock=clock,
                gateway=GatewayConfig(id=GATEWAY, region="3511 AB"),
            )
            verifier = CommandVerifier(
                GATEWAY,
                KEYS.command_keys(),
                KEYS.approval_keys(),
                await NonceStore.load(buffer, clock=clock),
                clock=clock,
            )
            processor = CommandProcessor(
                verifier, privacy_handlers(buffer, state, pipeline), pipeline_audit_sink(pipeline, buffer), clock=clock
            )
            published: list[tuple[str, bytes, Any]] = []

            async def publish_raw(topic: str, payload: bytes, **kw: Any) -> None:
                published.append((topic, payload, kw.get("correlation_data")))

            responses = []
            for raw in [
                signed("privacy.object", stream="analytics"),
                signed("privacy.object", stream="service"),
                signed("privacy.erase", stream="telemetry"),
                signed("privacy.export", recipient=b64url_encode(raw_public(RECIPIENT.public_key()))),
            ]:
                response = await answer(
                    processor,
                    publish_raw,
                    f"heatgate/v1/{GATEWAY}/cmd/response",
                    raw,
                    {"correlation_data": b"corr-1", "response_topic": "evil/topic"},
                )
                assert response is not None
                responses.append(response)
            everything = await buffer.export_all()
            audit = [json.loads(r.payload) for r in everything if r.stream == "security"]
            return responses, audit, state.objected_streams(), published
        finally:
            await buffer.close()

    responses, audit, objected, published = run_async(go())
    assert [(r.outcome, r.reason) for r in responses] == [
        ("done", None),
        ("failed", reasons.HANDLER_ERROR),
        ("done", None),
        ("done", None),
    ]
    assert objected == frozenset({"analytics"})
    assert "not objectable" in (responses[1].detail or "")
    events = [(a["event"], a["outcome"]) for a in audit]
    assert ("command.privacy.object", "accepted") in events
    assert ("privacy.object", "done") in events
    assert ("privacy.object", "refused") in events
    assert ("command.privacy.erase", "done") in events
    assert all(a["actor"] == f"remote:{next(iter(KEYS.command_keys()))}" for a in audit)
    # responses go to the gateway's own response topic, with the request's correlation data
    assert {(t, c) for t, _, c in published} == {(f"heatgate/v1/{GATEWAY}/cmd/response", b"corr-1")}
    assert decode_response(published[0][1]) == responses[0]
    exported = json.loads(open_sealed(RECIPIENT, b64url_decode(responses[3].result["sealed"])))
    assert exported["format"] == "heatgate.privacy-export/1"
    assert "analytics" in json.dumps(exported["choices"])
    assert any(r["stream"] == "security" for r in exported["records"])


def test_bounds_from_the_shipped_heat_pump_profile() -> None:
    profile = load_profile("sim-heatpump")
    bounds = profile_write_bounds({"heatpump": profile})
    writable = [p for p in profile.points if p.writable]
    assert writable, "the simulated heat pump has writable setpoints"
    point = writable[0]
    assert bounds("heatpump", point.name) == (point.min, point.max)
    readonly = next(p for p in profile.points if not p.writable)
    assert bounds("heatpump", readonly.name) is None
    assert bounds("boiler", point.name) is None


def test_device_write_handler_maps_driver_errors() -> None:
    class Refused(Exception):
        pass

    profile = load_profile("sim-heatpump")
    point = next(p for p in profile.points if p.writable)
    assert point.min is not None and point.max is not None
    top = float(point.max)
    written: list[tuple[str, str, float]] = []

    async def write_point(device: str, point: str, value: float) -> float:
        if value == top:
            raise Refused("device said no")
        written.append((device, point, value))
        return value

    value = float(point.min)

    async def go() -> list[Response]:
        verifier = CommandVerifier(
            GATEWAY,
            KEYS.command_keys(),
            KEYS.approval_keys(),
            await NonceStore.load(_State()),
            clock=Clock(),
            write_bounds=profile_write_bounds({"heatpump": profile}),
        )
        handler = device_write_handler(write_point, errors=(Refused,))
        processor = CommandProcessor(verifier, {"device.write": handler}, _audit, clock=Clock())
        out = []
        for v in (value, top):
            args = {"device": "heatpump", "point": point.name, "value": v}
            approval = sign_approval(
                KEYS.approval,
                operator="op-1",
                target=GATEWAY,
                issued_at=NOW_S,
                device="heatpump",
                point=point.name,
                value=v,
            )
            out.append(
                await answered(
                    processor,
                    encode_envelope(
                        sign_envelope(
                            KEYS.command,
                            target=GATEWAY,
                            command="device.write",
                            args=args,
                            issued_at=NOW_S,
                            approval=approval,
                        )
                    ),
                )
            )
        return out

    ok, second = run_async(go())
    assert ok.outcome == "done" and ok.result["readback"] == value, ok.detail
    assert written[0] == ("heatpump", point.name, value)
    assert (second.outcome, second.reason) == ("failed", reasons.HANDLER_ERROR)
    assert "device said no" in (second.detail or "")


class _State:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def get_state(self, key: str) -> bytes | None:
        return self.values.get(key)

    async def set_state(self, key: str, value: bytes | None) -> None:
        if value is not None:
            self.values[key] = value


async def _audit(_body: Any) -> str:
    return "r"


def test_the_daemons_processor_over_its_parts(tmp_path: Path) -> None:
    """build_processor (what the assembly calls) over the real buffer and pipeline: pinned keys
    from their files, ``status`` answered with the agent's snapshot, ``device.write`` reaching the
    writer of the device it names, within its profile's bounds; command_hook answers on the
    gateway's response topic and wakes the publisher."""
    profile = load_profile("sim-heatpump")
    point = next(p for p in profile.points if p.writable)
    assert point.min is not None and point.max is not None
    low, high = float(point.min), float(point.max)
    for name, key in (("command.pem", KEYS.command), ("approval.pem", KEYS.approval)):
        pem = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        (tmp_path / name).write_bytes(pem)
    keys = KeysConfig(
        command_public_key_file=str(tmp_path / "command.pem"), approval_public_key_file=str(tmp_path / "approval.pem")
    )
    written: list[tuple[str, str, float]] = []

    async def write_point(device: str, point_name: str, value: float) -> float:
        written.append((device, point_name, value))
        return value

    async def snapshot() -> dict[str, Any]:
        return {"gateway": GATEWAY, "healthy": True}

    def envelope(command: str, **args: Any) -> bytes:
        now_s = int(time.time())
        approval = None
        if command == "device.write":
            approval = sign_approval(KEYS.approval, operator="op-1", target=GATEWAY, issued_at=now_s, **args)
        return encode_envelope(
            sign_envelope(KEYS.command, target=GATEWAY, command=command, args=args, issued_at=now_s, approval=approval)
        )

    async def go() -> tuple[list[Response], list[tuple[str, bytes, Any]], int]:
        buffer = await open_buffer(
            tmp_path / "b.db", bytes(32), cap_bytes=16 << 20, retention_s={s: 86400.0 for s in STREAMS}
        )
        try:
            state = await PrivacyState.load(buffer)
            pseudonyms = await PseudonymKeys.load(buffer)
            pipeline = Pipeline(
                load_policy(data_path("privacy.toml")),
                keys=pseudonyms,
                state=state,
                gateway=GatewayConfig(id=GATEWAY, region="3511 AB"),
            )
            processor = await build_processor(
                gateway_id=GATEWAY,
                keys=keys,
                buffer=buffer,
                privacy_state=state,
                pipeline=pipeline,
                writable={"heatpump": WritableDevice(profile, write_point)},
                snapshot=snapshot,
            )
            responses = [
                await answered(processor, envelope("status")),
                await answered(
                    processor, envelope("device.write", device="heatpump", point=point.name, value=point.min)
                ),
                await answered(
                    processor, envelope("device.write", device="heatpump", point=point.name, value=high + 1)
                ),
            ]
            published: list[tuple[str, bytes, Any]] = []
            wakes = []

            async def publish_raw(topic: str, payload: bytes, **kw: Any) -> None:
                published.append((topic, payload, kw.get("correlation_data")))

            hook = command_hook(
                processor, publish_raw=publish_raw, wake=lambda: wakes.append(1), response_topic="gw/resp"
            )
            await hook("gw/cmd/status", envelope("status"), {"correlation_data": b"c-1", "response_topic": "evil"})
            await processor.close()
            return responses, published, len(wakes)
        finally:
            await buffer.close()

    (status, write, out_of_bounds), published, wakes = run_async(go())
    assert status.outcome == "done" and status.result == {"gateway": GATEWAY, "healthy": True}, status.detail
    assert write.outcome == "done" and write.result["readback"] == low, write.detail
    assert written == [("heatpump", point.name, low)]
    assert out_of_bounds.outcome == "refused"
    assert [(topic, corr) for topic, _, corr in published] == [("gw/resp", b"c-1")]
    assert decode_response(published[0][1]).outcome == "done"
    assert wakes == 1
