"""The backend for the Mosquitto comparison: MQTT 5 shared subscription (``$share/backend/...``)
by several paho clients, the same decoding and de-duplication as the JetStream backend."""

from __future__ import annotations

import threading
import time
import uuid

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bench.fleet_support.backend import BackendStats
from heatgate.agent.publish.decode import Deduplicator, decode_message

__all__ = ["SharedSubscriptionBackend"]


class SharedSubscriptionBackend:
    def __init__(self, host: str, port: int, *, workers: int = 3, prefix: str = "heatgate/v1") -> None:
        self.stats = BackendStats()
        self.dedup = Deduplicator(capacity=10_000_000)
        self.prefix = prefix
        self._lock = threading.Lock()
        self._subscribed = threading.Semaphore(0)
        self._clients: list[mqtt.Client] = []
        self._host, self._port, self._workers = host, port, workers

    def start(self, timeout_s: float = 10.0) -> None:
        for index in range(self._workers):
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2, client_id=f"backend-{index}-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
            )
            client.user_data_set(index)
            client.on_connect = self._on_connect
            client.on_subscribe = lambda *_a: self._subscribed.release()
            client.on_message = self._on_message
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
            client.connect(self._host, self._port, keepalive=30, clean_start=False, properties=props)
            client.loop_start()
            self._clients.append(client)
        for _ in self._clients:
            if not self._subscribed.acquire(timeout=timeout_s):
                raise TimeoutError("backend did not subscribe")

    def _on_connect(self, client: mqtt.Client, _ud: object, _flags: object, reason: object, _props: object) -> None:
        client.subscribe(f"$share/backend/{self.prefix}/#", qos=1)

    def _on_message(self, _client: mqtt.Client, worker: int, msg: mqtt.MQTTMessage) -> None:
        decoded = decode_message(msg.topic, bytes(msg.payload), prefix=self.prefix)
        with self._lock:
            self.stats.count(worker, msg.topic, decoded, self.dedup)

    def stop(self) -> None:
        for client in self._clients:
            client.disconnect()
            client.loop_stop()
        self._clients.clear()

    def wait_for(self, expected: set[str], timeout_s: float) -> set[str]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                missing = expected - self.stats.ids
            if not missing:
                return missing
            time.sleep(0.2)
        with self._lock:
            return expected - self.stats.ids
