"""TLS and mutual TLS to a real Mosquitto; refusals are clear and never fall back to plaintext."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.memory_buffer import MemoryBuffer, fault_record
from heatgate.agent.devtools.pki import make_ca
from heatgate.agent.devtools.subscriber import Subscriber
from heatgate.agent.payloads import StatePayload
from heatgate.agent.publish.client import MqttClient
from heatgate.agent.publish.errors import ConnectError
from heatgate.agent.publish.publisher import Publisher
from tests.support.leaks import run_async

pytestmark = pytest.mark.broker


def _config(
    broker: Broker, *, host: str = "localhost", ca: Path | None = None, client_cert: bool = True, protocol: str = "5"
) -> MqttConfig:
    assert broker.pki is not None
    mtls = broker.mode == "mtls" and client_cert
    return MqttConfig(
        url=f"mqtts://{host}:{broker.port}",
        ca_file=str(ca or broker.pki.ca_cert),
        cert_file=str(broker.pki.client_cert) if mtls else None,
        key_file=str(broker.pki.client_key) if mtls else None,
        protocol=protocol,  # type: ignore[arg-type]
        reconnect_min_s=0.05,
        reconnect_max_s=0.2,
    )


async def _connect_once(config: MqttConfig) -> bool:
    client = MqttClient(config, client_id="tls-test", clean_start=True)
    try:
        return await client.connect()
    finally:
        await client.disconnect()


async def _publish_until_acked(config: MqttConfig) -> MemoryBuffer:
    buffer = MemoryBuffer()
    await buffer.put([fault_record(1)])
    publisher = Publisher(config, "gw-test-0001", buffer, version="t", health=dict)
    task = asyncio.create_task(publisher.run())
    while buffer.records:
        await asyncio.sleep(0.02)
    await publisher.stop()
    await task
    return buffer


@pytest.mark.parametrize("mode", ["tls", "mtls"])
def test_publisher_connects_over_tls_and_delivers(broker_factory: Callable[..., Broker], mode: str) -> None:
    broker = broker_factory(mode)
    with Subscriber("127.0.0.1", broker.port, ["heatgate/#"], tls=broker.client_tls_context()) as sub:
        buffer = run_async(_publish_until_acked(_config(broker)))
        got = sub.wait_for(lambda ms: any(m.topic.endswith("/service/fault") for m in ms))
    assert len(buffer.acked) == 1
    fault = next(m for m in got if m.topic.endswith("/service/fault"))
    assert buffer.acked[0].encode() in fault.payload


def test_protocol_311_is_selectable_over_mtls(mtls_broker: Broker) -> None:
    with Subscriber("127.0.0.1", mtls_broker.port, ["heatgate/#"], tls=mtls_broker.client_tls_context()) as sub:
        buffer = run_async(_publish_until_acked(_config(mtls_broker, protocol="3.1.1")))
        sub.wait_for(lambda ms: any(m.topic.endswith("/service/fault") for m in ms))
    assert len(buffer.acked) == 1


def test_wrong_ca_is_refused_with_a_clear_error(tls_broker: Broker, tmp_path: Path) -> None:
    other_ca, _key = make_ca(tmp_path / "other", name="not-the-brokers-ca")
    with pytest.raises(ConnectError) as info:
        run_async(_connect_once(_config(tls_broker, ca=other_ca)))
    assert info.value.tls
    assert "certificate" in info.value.reason and "ca_file" in info.value.reason


def test_tls_context_checks_host_name_and_refuses_old_tls(mtls_broker: Broker) -> None:
    import ssl

    from heatgate.agent.publish.client import build_tls_context

    context = build_tls_context(_config(mtls_broker))
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.get_ca_certs()[0]["subject"] == ((("commonName", "heatgate-test-ca"),),)


def test_missing_client_certificate_is_refused(mtls_broker: Broker) -> None:
    with pytest.raises(ConnectError) as info:
        run_async(_connect_once(_config(mtls_broker, client_cert=False)))
    assert info.value.tls
    assert "certificate required" in str(info.value)


def test_publisher_reports_refusal_and_keeps_records(tls_broker: Broker, tmp_path: Path) -> None:
    other_ca, _key = make_ca(tmp_path / "other", name="not-the-brokers-ca")
    events: list[tuple[str, str, str | None]] = []

    async def scenario() -> MemoryBuffer:
        buffer = MemoryBuffer()
        await buffer.put([fault_record(1)])
        publisher = Publisher(
            _config(tls_broker, ca=other_ca),
            "gw-test-0001",
            buffer,
            version="t",
            health=dict,
            on_connectivity=lambda *e: events.append(e),
        )
        task = asyncio.create_task(publisher.run())
        while sum(1 for e in events if e[0] == "connect_failed") < 2:
            await asyncio.sleep(0.02)
        assert "certificate" in (publisher.status()["last_error"] or "")
        await publisher.stop()
        await task
        return buffer

    buffer = run_async(scenario())
    assert len(buffer.records) == 1 and not buffer.acked
    assert all(e[0] == "connect_failed" for e in events)


class _Sniffer:
    """A TCP listener that records every byte a client sends, then hangs up."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        self.sock.settimeout(0.05)
        self.received: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="sniffer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                conn.settimeout(2)
                try:
                    self.received.append(conn.recv(65536))
                except OSError:
                    self.received.append(b"")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.sock.close()


def test_a_failed_tls_handshake_is_never_followed_by_plaintext(tls_broker: Broker) -> None:
    sniffer = _Sniffer()
    try:
        assert tls_broker.pki is not None
        config = MqttConfig(
            url=f"mqtts://127.0.0.1:{sniffer.port}",
            ca_file=str(tls_broker.pki.ca_cert),
            reconnect_min_s=0.05,
            reconnect_max_s=0.1,
        )

        async def attempts() -> None:
            for _ in range(3):
                with pytest.raises(ConnectError):
                    await _connect_once(config)

        run_async(attempts())
    finally:
        sniffer.close()
    assert len(sniffer.received) == 3
    for data in sniffer.received:
        assert data[:1] == b"\x16", f"not a TLS handshake record: {data[:16]!r}"  # TLS handshake, not CONNECT
        assert b"MQTT" not in data


def test_state_payload_is_decodable() -> None:
    import msgspec

    text = msgspec.json.encode(StatePayload(state="offline", gateway="gw-1"))
    assert b'"schema":"heatgate.state/1"' in text
