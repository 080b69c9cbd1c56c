"""A collecting MQTT subscriber (paho, its own network thread): what a backend received, for
assertions in tests and counts in benchmarks."""

from __future__ import annotations

import ssl
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.properties import Properties

__all__ = ["Received", "Subscriber"]


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool
    qos: int
    properties: Properties | None
    at_monotonic: float


class Subscriber:
    """Subscribe to ``topics`` on a broker and keep every message received."""

    def __init__(
        self,
        host: str,
        port: int,
        topics: list[str],
        *,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        client_id: str | None = None,
        clean_start: bool = True,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
        session_expiry_s: int = 0,
    ) -> None:
        """``clean_start=False`` with ``session_expiry_s`` > 0 (MQTT 5): the broker keeps the
        subscription and queues messages while this subscriber is away (a broker restart with
        persistence included); paho's network thread reconnects by itself."""
        self.messages: list[Received] = []
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._topics = topics
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or f"test-sub-{uuid.uuid4().hex[:8]}",
            protocol=protocol,
        )
        if tls is not None:
            self.client.tls_set_context(tls)
        if username is not None:
            self.client.username_pw_set(username, password)
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = self._on_subscribe
        self.client.on_message = self._on_message
        self._host, self._port = host, port
        self._clean_start = clean_start
        self._protocol = protocol
        self._session_expiry_s = session_expiry_s

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object, reason: object, _props: object) -> None:
        if not getattr(reason, "is_failure", False):
            client.subscribe([(t, 1) for t in self._topics])
            self._connected.set()

    def _on_subscribe(self, *_args: object) -> None:
        self._subscribed.set()

    def _on_message(self, _client: mqtt.Client, _ud: object, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(
                Received(
                    msg.topic,
                    bytes(msg.payload),
                    bool(msg.retain),
                    msg.qos,
                    getattr(msg, "properties", None),
                    time.monotonic(),
                )
            )
            self._cond.notify_all()

    def start(self, timeout_s: float = 10.0) -> Subscriber:
        if self._protocol == mqtt.MQTTv5:
            properties = None
            if self._session_expiry_s:
                from paho.mqtt.packettypes import PacketTypes

                properties = Properties(PacketTypes.CONNECT)
                properties.SessionExpiryInterval = self._session_expiry_s
            self.client.connect(
                self._host, self._port, keepalive=30, clean_start=self._clean_start, properties=properties
            )
        else:
            self.client.connect(self._host, self._port, keepalive=30)
        self.client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.stop()
            raise TimeoutError("subscriber did not connect and subscribe")
        return self

    def stop(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def wait_for(self, predicate: Callable[[list[Received]], bool], timeout_s: float = 10.0) -> list[Received]:
        """Block until ``predicate(messages)`` holds; raise TimeoutError with what arrived."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while not predicate(self.messages):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(
                        f"condition not met; {len(self.messages)} message(s) received: "
                        f"{[m.topic for m in self.messages[-10:]]}"
                    )
                self._cond.wait(remaining)
            return list(self.messages)

    def __enter__(self) -> Subscriber:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
