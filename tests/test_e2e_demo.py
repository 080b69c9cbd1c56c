"""The demo's composition, end to end: every source reaches the backend on the right streams,
the injected fault arrives on service/fault, an approved write reaches the heat pump, a forged
one does not, no identifier is published or stored in clear, and SIGTERM stops it all cleanly.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from pymodbus.client import ModbusTcpClient

from heatgate.agent.devtools.demo import GATEWAY_ID, running_demo
from heatgate.agent.devtools.subscriber import Received, Subscriber
from heatgate.agent.publish.decode import decode_message
from heatgate.drivers.modbus.profile import load_profile
from heatgate.drivers.sim.zwave import DEFAULT_HOME_ID

pytestmark = [pytest.mark.broker, pytest.mark.slow]

PREFIX = "heatgate/v1"
HEATPUMP_SERIAL = "HGSIM0000001234"
P1_EQUIPMENT_ID = "4530303334303036393938343532303136"
GAS_EQUIPMENT_ID = "4730303339303031393930303537313136"


def _canaries() -> list[bytes]:
    decoded = bytes.fromhex(P1_EQUIPMENT_ID).decode()  # "E0034006998452016": what a meter's label shows
    home_hex = DEFAULT_HOME_ID.hex()
    plain = [
        HEATPUMP_SERIAL,
        P1_EQUIPMENT_ID,
        GAS_EQUIPMENT_ID,
        decoded,
        home_hex,
        str(int(home_hex, 16)),
        "3511 AB",
        "3511AB",
    ]
    forms: list[bytes] = []
    for text in plain:
        raw = text.encode()
        forms += [raw, raw.lower(), raw.upper(), base64.b64encode(raw), raw.hex().encode()]
    return forms


def _records(messages: list[Received]) -> list[tuple[str, dict[str, object]]]:
    found = []
    for message in messages:
        if message.topic.endswith("/state") or "/cmd/" in message.topic:
            continue
        document = json.loads(message.payload)
        for record in document.get("records", []):
            found.append((message.topic, record["body"]))
    return found


def _cmd(demo_root: Path, broker_url: str, ca: Path, *args: str) -> dict[str, object]:
    backend = demo_root / "backend"
    keys = demo_root / "backend-keys"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "heatgate",
            "cmd",
            "send",
            "--url",
            broker_url,
            "--ca",
            str(ca),
            "--cert",
            str(backend / "backend-demo.crt"),
            "--key",
            str(backend / "backend-demo.key"),
            "--target",
            GATEWAY_ID,
            "--sign-key",
            str(keys / "command.key"),
            "--wait-s",
            "20",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout, result.stderr
    response: dict[str, object] = json.loads(result.stdout)
    return response


def _read_setpoint(port: int) -> float:
    point = load_profile("sim-heatpump").point("flow_setpoint_c")
    client = ModbusTcpClient("127.0.0.1", port=port, timeout=3)
    try:
        assert client.connect()
        response = client.read_holding_registers(point.address, count=1, device_id=1)
        assert not response.isError()
        raw = response.registers[0]
    finally:
        client.close()
    signed = raw - 65536 if raw >= 32768 and point.type == "s16" else raw
    return signed * point.scale + point.offset


def test_demo_end_to_end(tmp_path: Path) -> None:
    with running_demo(tmp_path / "demo", fault_at_s=3) as demo:
        assert demo.broker is not None and demo.broker.pki is not None
        pki = demo.broker.pki
        backend = demo.root / "backend"
        subscriber = Subscriber(
            "127.0.0.1",
            demo.broker.port,
            [f"{PREFIX}/#"],
            tls=_backend_tls(pki.ca_cert, backend / "backend-demo.crt", backend / "backend-demo.key"),
        )
        with subscriber:

            def complete(messages: list[Received]) -> bool:
                bodies = _records(messages)
                devices = {(t.rsplit("/", 1)[-1], b.get("device")) for t, b in bodies}
                faults = [b for t, b in bodies if t.endswith("/service/fault") and b.get("code") == 3]
                analytics = [t for t, _ in bodies if t.startswith(f"{PREFIX}/analytics/")]
                wanted = {("telemetry", d) for d in ("hp1", "meter1", "meter", "living-room", "washing-machine")}
                return bool(faults) and wanted <= devices and bool(analytics)

            messages = subscriber.wait_for(complete, timeout_s=60)

            # Every message is valid against its schema, the analytics ones without a gateway id.
            for message in messages:
                decoded = decode_message(message.topic, message.payload, prefix=PREFIX)
                assert decoded.valid, (message.topic, decoded.error)
                if "/analytics/" in message.topic:
                    assert GATEWAY_ID.encode() not in message.payload

            # An approved write reaches the heat pump and is read back from the simulator.
            approval = demo.root / "approval.json"
            approved = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "heatgate",
                    "cmd",
                    "approve",
                    "--key",
                    str(demo.root / "backend-keys" / "approval.key"),
                    "--operator",
                    "op-7",
                    "--target",
                    GATEWAY_ID,
                    "--device",
                    "hp1",
                    "--point",
                    "flow_setpoint_c",
                    "--value",
                    "42",
                ],
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert approved.returncode == 0, approved.stderr
            approval.write_text(approved.stdout)
            response = _cmd(
                demo.root,
                demo.broker.url,
                pki.ca_cert,
                "--command",
                "device.write",
                "--arg",
                "device=hp1",
                "--arg",
                "point=flow_setpoint_c",
                "--arg",
                "value=42",
                "--approval",
                str(approval),
            )
            assert response["outcome"] == "done", response
            assert isinstance(response["result"], dict) and response["result"]["readback"] == 42
            assert _read_setpoint(demo.heatpump_port) == pytest.approx(42)

            # The same write without approval, and out of bounds, is refused and nothing changes.
            refused = _cmd(
                demo.root,
                demo.broker.url,
                pki.ca_cert,
                "--command",
                "device.write",
                "--arg",
                "device=hp1",
                "--arg",
                "point=flow_setpoint_c",
                "--arg",
                "value=30",
            )
            assert refused["outcome"] == "refused" and refused["reason"] == "approval_required"
            assert _read_setpoint(demo.heatpump_port) == pytest.approx(42)

            subscriber.wait_for(
                lambda ms: any(
                    b.get("event") == "command.device.write" and b.get("outcome") == "refused" for _, b in _records(ms)
                ),
                timeout_s=20,
            )
            all_bytes = b"".join(m.topic.encode() + m.payload for m in subscriber.messages)
        agent = demo.processes["agent"]
        demo.stop()
        assert agent.returncode == 0, (demo.root / "agent.log").read_text()[-3000:]

    # Nothing identifying in anything published, nor in the database file and its WAL.
    stored = b"".join(p.read_bytes() for p in (demo.root / "state").glob("buffer.db*"))
    for canary in _canaries():
        assert canary not in all_bytes, canary
        assert canary not in stored, canary


def _backend_tls(ca: Path, cert: Path, key: Path):  # type: ignore[no-untyped-def]
    import ssl

    context = ssl.create_default_context(cafile=str(ca))
    context.load_cert_chain(str(cert), str(key))
    return context
