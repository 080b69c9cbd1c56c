"""The test harness talks to a real Mosquitto: plain, TLS, mutual TLS, password + ACL."""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.pki import make_ca
from heatgate.agent.devtools.subscriber import Subscriber

pytestmark = pytest.mark.broker


def _publish_once(
    broker: Broker,
    tls: ssl.SSLContext | None,
    topic: str,
    payload: bytes,
    username: str | None = None,
    password: str | None = None,
) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    if tls is not None:
        client.tls_set_context(tls)
    if username:
        client.username_pw_set(username, password)
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    try:
        info = client.publish(topic, payload, qos=1)
        info.wait_for_publish(timeout=5)
        assert info.is_published()
    finally:
        client.disconnect()
        client.loop_stop()


def _connect_result(broker: Broker, tls: ssl.SSLContext) -> str:
    """Try a connection; return 'connected' or the error it met."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set_context(tls)
    done = threading.Event()
    outcome: list[str] = []

    def on_connect(*_args: object) -> None:
        outcome.append("connected")
        done.set()

    client.on_connect = on_connect
    try:
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        done.wait(3)
        return outcome[0] if outcome else "no CONNACK"
    except (ssl.SSLError, OSError) as exc:
        return f"refused: {exc}"
    finally:
        client.disconnect()
        client.loop_stop()


def test_plain_roundtrip(plain_broker: Broker) -> None:
    with Subscriber("127.0.0.1", plain_broker.port, ["t/#"]) as sub:
        _publish_once(plain_broker, None, "t/a", b"hello")
        got = sub.wait_for(lambda ms: len(ms) >= 1)
    assert got[0].topic == "t/a" and got[0].payload == b"hello"


def test_tls_roundtrip(tls_broker: Broker) -> None:
    context = tls_broker.client_tls_context()
    with Subscriber("127.0.0.1", tls_broker.port, ["t/#"], tls=context) as sub:
        _publish_once(tls_broker, tls_broker.client_tls_context(), "t/b", b"secret")
        got = sub.wait_for(lambda ms: len(ms) >= 1)
    assert got[0].payload == b"secret"


def test_mtls_roundtrip_and_refusals(mtls_broker: Broker, tmp_path: object) -> None:
    with Subscriber("127.0.0.1", mtls_broker.port, ["t/#"], tls=mtls_broker.client_tls_context()) as sub:
        _publish_once(mtls_broker, mtls_broker.client_tls_context(), "t/c", b"x")
        sub.wait_for(lambda ms: len(ms) >= 1)
    # Without a client certificate the broker refuses the handshake.
    no_cert = _connect_result(mtls_broker, mtls_broker.client_tls_context(with_client_cert=False))
    assert no_cert != "connected"


def test_wrong_ca_refused(tls_broker: Broker, tmp_path_factory: pytest.TempPathFactory) -> None:
    other_ca, _ = make_ca(tmp_path_factory.mktemp("other"), name="not-the-broker-ca")
    context = ssl.create_default_context(cafile=str(other_ca))
    result = _connect_result(tls_broker, context)
    assert result.startswith("refused") and "CERTIFICATE_VERIFY_FAILED" in result, result


def test_password_and_acl(broker_factory: Callable[..., Broker]) -> None:
    broker = broker_factory(
        "auth",
        users={"gw": "pw-gw", "backend": "pw-be"},
        acl="user gw\ntopic write heatgate/#\nuser backend\ntopic read heatgate/#\n",
    )
    with Subscriber("127.0.0.1", broker.port, ["heatgate/#", "other/#"], username="backend", password="pw-be") as sub:
        _publish_once(broker, None, "other/x", b"denied", "gw", "pw-gw")
        _publish_once(broker, None, "heatgate/x", b"allowed", "gw", "pw-gw")
        got = sub.wait_for(lambda ms: any(m.topic == "heatgate/x" for m in ms))
    assert [m.payload for m in got] == [b"allowed"]


def test_broker_restart_keeps_port(plain_broker: Broker) -> None:
    port = plain_broker.port
    plain_broker.stop()
    plain_broker.start()
    assert plain_broker.port == port
    _publish_once(plain_broker, None, "t/r", b"back")
