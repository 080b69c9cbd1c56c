"""``heatgate keys generate`` and ``heatgate cmd sign|approve|send``; ``send`` against a real
Mosquitto, answered by a tiny responder that runs the real CommandProcessor behind the
agent's own MQTT adapter (what the daemon does)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from heatgate.agent.cli import main
from heatgate.agent.commands import reasons
from heatgate.agent.commands.dispatch import CommandProcessor
from heatgate.agent.commands.keys import key_id, load_ed25519_public
from heatgate.agent.commands.nonces import NonceStore
from heatgate.agent.commands.private_keys import load_x25519_private
from heatgate.agent.commands.verify import CommandVerifier
from heatgate.agent.commands.wiring import answer, pinned_keys
from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.subscriber import Subscriber
from heatgate.agent.publish.client import Incoming, MqttClient
from tests.support.commands import GATEWAY, AuditLog, Calls, write_bounds
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

PREFIX = "heatgate/v1"


@pytest.fixture
def keydir(tmp_path: Path) -> Path:
    keys = tmp_path / "keys"
    for name in ("command", "approval", "recipient"):
        assert main(["keys", "generate", "--out", str(keys), "--name", name]) == 0
    return keys


def test_keys_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "k"
    assert main(["keys", "generate", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert stat.S_IMODE(os.stat(out / "command.key").st_mode) == 0o600
    assert f"key id {key_id(load_ed25519_public(out / 'command.pub'))}" in printed
    assert main(["keys", "generate", "--out", str(out)]) == 2, "never overwrites silently"
    assert "exists" in capsys.readouterr().err
    assert main(["keys", "generate", "--out", str(out), "--name", "recipient"]) == 0
    load_x25519_private(out / "recipient.key")
    with pytest.raises(Exception, match="not an Ed25519"):
        load_ed25519_public(out / "recipient.pub")


def cli_json(argv: list[str], capsys: pytest.CaptureFixture[str]) -> bytes:
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out.strip().encode()


def verify_with(keydir: Path, raw: bytes, bounds: Any = write_bounds) -> Any:
    async def go() -> Any:
        nonces = await NonceStore.load(MemoryState())
        verifier = CommandVerifier(
            GATEWAY,
            pinned_keys([keydir / "command.pub"]),
            pinned_keys([keydir / "approval.pub"]),
            nonces,
            write_bounds=bounds,
        )
        return await verifier.verify(raw)

    return run_async(go())


def test_sign_and_approve_make_envelopes_the_gateway_accepts(keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = cli_json(
        [
            "cmd",
            "sign",
            "--key",
            str(keydir / "command.key"),
            "--target",
            GATEWAY,
            "--command",
            "privacy.erase",
            "--arg",
            "all=true",
        ],
        capsys,
    )
    verdict = verify_with(keydir, raw)
    assert verdict.command == "privacy.erase" and verdict.args.all is True

    approval = keydir / "approval.json"
    approval.write_bytes(
        cli_json(
            [
                "cmd",
                "approve",
                "--key",
                str(keydir / "approval.key"),
                "--operator",
                "op-7",
                "--target",
                GATEWAY,
                "--device",
                "heatpump",
                "--point",
                "flow_setpoint",
                "--value",
                "45",
            ],
            capsys,
        )
    )
    write = [
        "cmd",
        "sign",
        "--key",
        str(keydir / "command.key"),
        "--target",
        GATEWAY,
        "--command",
        "device.write",
        "--arg",
        "device=heatpump",
        "--arg",
        "point=flow_setpoint",
        "--arg",
        "value=45",
    ]
    verdict = verify_with(keydir, cli_json([*write, "--approval", str(approval)], capsys))
    assert (verdict.operator, verdict.args.value) == ("op-7", 45)
    inline = cli_json([*write, "--approval-key", str(keydir / "approval.key"), "--operator", "op-8"], capsys)
    assert verify_with(keydir, inline).operator == "op-8"
    # an approval signed with the command key is refused
    forged = cli_json([*write, "--approval-key", str(keydir / "command.key"), "--operator", "op-9"], capsys)
    assert verify_with(keydir, forged).reason == reasons.BAD_APPROVAL


def test_sign_usage_errors(keydir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["cmd", "sign", "--key", str(keydir / "command.key"), "--target", GATEWAY]
    assert main([*base, "--command", "ping", "--arg", "novalue"]) == 2
    assert main([*base, "--command", "device.write", "--approval-key", str(keydir / "approval.key")]) == 2
    assert main(["cmd", "sign", "--key", str(keydir / "nope.key"), "--target", GATEWAY, "--command", "ping"]) == 2
    capsys.readouterr()


class Responder:
    """The gateway side of the exchange: subscribe to cmd/+, answer on cmd/response."""

    def __init__(self, broker: Broker, keydir: Path, *, tls: bool) -> None:
        options: dict[str, Any] = {"url": broker.url}
        if tls:
            assert broker.pki is not None
            options.update(
                ca_file=str(broker.pki.ca_cert),
                cert_file=str(broker.pki.client_cert),
                key_file=str(broker.pki.client_key),
            )
        self.config = MqttConfig(**options)
        self.keydir = keydir
        self.calls = Calls()
        self.audit = AuditLog()
        self.tasks: set[asyncio.Task[None]] = set()
        self.handled = 0

    async def start(self) -> None:
        nonces = await NonceStore.load(MemoryState())
        verifier = CommandVerifier(
            GATEWAY,
            pinned_keys([self.keydir / "command.pub"]),
            pinned_keys([self.keydir / "approval.pub"]),
            nonces,
            write_bounds=write_bounds,
        )
        self.processor = CommandProcessor(verifier, self.calls.handlers(), self.audit)
        self.client = MqttClient(self.config, clean_start=True, on_message=self._on_message)
        await self.client.connect()
        self.client.subscribe([f"{PREFIX}/{GATEWAY}/cmd/+"])
        await asyncio.sleep(0.2)  # SUBACK; the adapter does not expose it

    def _on_message(self, message: Incoming) -> None:
        if message.topic.endswith("/cmd/response"):
            return
        task = asyncio.get_running_loop().create_task(self._answer(message))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, message: Incoming) -> None:
        async def publish_raw(topic: str, payload: bytes, *, qos: int, correlation_data: bytes | None) -> None:
            await self.client.publish(topic, payload, qos=qos, correlation_data=correlation_data)

        await answer(
            self.processor, publish_raw, f"{PREFIX}/{GATEWAY}/cmd/response", message.payload, dict(message.properties)
        )
        self.handled += 1

    async def stop(self) -> None:
        await asyncio.gather(*self.tasks)
        await self.processor.close()
        await self.client.disconnect()


async def heatgate(*argv: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "heatgate", *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def send_args(broker: Broker, keydir: Path, *, tls: bool) -> list[str]:
    argv = ["cmd", "send", "--url", broker.url, "--prefix", PREFIX, "--target", GATEWAY, "--wait-s", "10"]
    if tls:
        assert broker.pki is not None
        argv += [
            "--ca",
            str(broker.pki.ca_cert),
            "--cert",
            str(broker.pki.client_cert),
            "--key",
            str(broker.pki.client_key),
        ]
    return argv


@pytest.mark.parametrize("mode", ["plain", "mtls"])
def test_send_against_a_real_broker(broker_factory: Any, keydir: Path, tmp_path: Path, mode: str) -> None:
    broker = broker_factory(mode)
    tls = mode == "mtls"
    base = send_args(broker, keydir, tls=tls)
    sign_key = ["--sign-key", str(keydir / "command.key")]
    envelope = tmp_path / "status.json"

    async def go() -> list[tuple[int, str, str]]:
        responder = Responder(broker, keydir, tls=tls)
        await responder.start()
        try:
            code, out, err = await heatgate(
                "cmd", "sign", "--key", str(keydir / "command.key"), "--target", GATEWAY, "--command", "status"
            )
            assert code == 0, err
            envelope.write_text(out)
            return [
                await heatgate(*base, "--envelope", str(envelope)),
                await heatgate(*base, "--envelope", str(envelope)),  # the same envelope again
                await heatgate(
                    *base,
                    *sign_key,
                    "--command",
                    "device.write",
                    "--arg",
                    "device=heatpump",
                    "--arg",
                    "point=flow_setpoint",
                    "--arg",
                    "value=48.5",
                    "--approval-key",
                    str(keydir / "approval.key"),
                    "--operator",
                    "op-42",
                ),
                await heatgate(
                    *base,
                    *sign_key,
                    "--command",
                    "privacy.export",
                    "--recipient",
                    str(keydir / "recipient.pub"),
                    "--decrypt-key",
                    str(keydir / "recipient.key"),
                ),
            ]
        finally:
            await responder.stop()
            assert responder.calls.setpoint == 48.5
            assert [a.outcome for a in responder.audit.records] == [
                "accepted",
                "done",
                "refused",
                "accepted",
                "done",
                "accepted",
                "done",
            ]

    status, replay, write, export = run_async(go())
    assert status[0] == 0, status[2]
    assert json.loads(status[1])["result"] == {"healthy": True}
    assert replay[0] == 1
    assert (json.loads(replay[1])["outcome"], json.loads(replay[1])["reason"]) == ("refused", reasons.REPLAYED)
    assert write[0] == 0, write[2]
    assert json.loads(write[1])["result"] == {"readback": 48.5}
    assert export[0] == 0, export[2]
    assert json.loads(export[1])["result"]["opened"]["register"] == {"streams": 5}


def test_a_flood_through_the_broker_gets_the_budget_s_responses_and_exact_counts(
    plain_broker: Broker, keydir: Path
) -> None:
    """2,000 unsigned envelopes on the command topic: 60 answers on cmd/response, 60 audit
    records, and summaries counting the other 1,940 exactly (through ``wiring.answer``)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    flood = 2000
    unsigned = json.dumps(
        {
            "v": 1,
            "target": GATEWAY,
            "command": "ping",
            "args": {},
            "issued_at": 1,
            "expires_at": 2,
            "nonce": "A" * 22,
            "key_id": "0" * 16,
        }
    ).encode()

    async def go() -> tuple[Responder, int]:
        responder = Responder(plain_broker, keydir, tls=False)
        await responder.start()
        with Subscriber("127.0.0.1", plain_broker.port, [f"{PREFIX}/{GATEWAY}/cmd/response"]) as responses:
            sender = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
            sender.connect("127.0.0.1", plain_broker.port)
            sender.loop_start()
            try:
                infos = [sender.publish(f"{PREFIX}/{GATEWAY}/cmd/ping", unsigned, qos=1) for _ in range(flood)]
                for info in infos:
                    await asyncio.to_thread(info.wait_for_publish, 10)
                for _ in range(200):
                    if responder.handled == flood:
                        break
                    await asyncio.sleep(0.05)
                await responder.stop()
                await asyncio.sleep(0.5)  # any late response would have arrived by now
                return responder, len(responses.messages)
            finally:
                sender.loop_stop()
                sender.disconnect()

    responder, answered = run_async(go())
    assert responder.handled == flood
    assert answered == 60
    records = responder.audit.records
    individual = [r for r in records if r.reason == reasons.UNSIGNED]
    summaries = [r for r in records if r.event == "command.refusals_suppressed"]
    assert len(individual) == 60
    assert sum(int(s.details["suppressed"] or 0) for s in summaries) == flood - 60
    assert len(records) == 60 + len(summaries) and len(summaries) <= 2


def test_send_times_out_without_a_gateway(plain_broker: Broker, keydir: Path) -> None:
    code, _out, err = run_async(
        heatgate(
            *send_args(plain_broker, keydir, tls=False),
            "--wait-s",
            "0.5",
            "--sign-key",
            str(keydir / "command.key"),
            "--command",
            "ping",
        )
    )
    assert code == 1
    assert "timed out" in err and "response" in err


def test_send_reports_an_unreachable_broker(keydir: Path) -> None:
    from heatgate.agent.devtools.localbroker import free_port

    code, _out, err = run_async(
        heatgate(
            "cmd",
            "send",
            "--url",
            f"mqtt://127.0.0.1:{free_port()}",
            "--target",
            GATEWAY,
            "--sign-key",
            str(keydir / "command.key"),
            "--command",
            "ping",
        )
    )
    assert code == 1
    assert "cannot connect" in err
