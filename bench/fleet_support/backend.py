"""The backend's side of a NATS fleet: a durable JetStream pull consumer shared by workers.

NATS's MQTT listener turns each MQTT PUBLISH into a NATS message on the mapped subject
(``heatgate/v1/gw-1/telemetry`` -> ``heatgate.v1.gw-1.telemetry``). A JetStream stream on
``heatgate.v1.>`` (replicated, R3 in a 3-node cluster) keeps them; one durable pull consumer is
shared by ``workers`` connections, each fetching batches, so the work spreads across workers
(and across processes or machines: any worker that binds the same durable name joins).

Each message is validated with heatgate's decoder (:func:`agent.publish.decode.decode_message`)
and its records are de-duplicated by record id. Delivery is at least once at two places (the
gateway re-sends after a lost PUBACK; JetStream redelivers after a lost ack), so
``duplicates`` counts both.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from agent.publish.decode import Deduplicator, decode_message

__all__ = ["BackendStats", "JetStreamBackend", "subject_to_topic", "topic_to_subject"]

STREAM = "HEATGATE"
DURABLE = "heatgate-backend"
FETCH_BATCH = 256
FETCH_TIMEOUT_S = 1.0


def topic_to_subject(topic: str) -> str:
    """NATS's mapping of an MQTT topic without ``.`` or a leading ``/``: ``/`` -> ``.``."""
    if "." in topic or topic.startswith("/"):
        raise ValueError(f"topic {topic!r} has no simple NATS subject")
    return topic.replace("/", ".")


def subject_to_topic(subject: str) -> str:
    return subject.replace(".", "/")


@dataclass
class BackendStats:
    """What the backend saw. ``ids`` are the unique record ids (kept whole for the checks)."""

    messages: int = 0
    records: int = 0
    duplicates: int = 0
    invalid: int = 0
    states: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    per_worker: Counter[int] = field(default_factory=Counter)
    ids: set[str] = field(default_factory=set)
    first_record_s: float | None = None
    last_record_s: float | None = None
    invalid_examples: list[str] = field(default_factory=list)

    @property
    def unique(self) -> int:
        return len(self.ids)


class JetStreamBackend:
    """``await start()`` creates (or binds) the stream and the durable consumer and starts the
    workers; ``await stop()`` ends them. Counting is in :attr:`stats` (one event loop: the
    workers share the de-duplication set without locks)."""

    def __init__(
        self,
        servers: Sequence[str],
        *,
        workers: int = 3,
        replicas: int = 3,
        prefix: str = "heatgate/v1",
        stream: str = STREAM,
        durable: str = DURABLE,
        ack_wait_s: float = 30.0,
        dedup_capacity: int = 10_000_000,
    ) -> None:
        self.servers = list(servers)
        self.workers = workers
        self.replicas = replicas
        self.prefix = prefix
        self.stream = stream
        self.durable = durable
        self.subject = topic_to_subject(prefix) + ".>"
        self.ack_wait_s = ack_wait_s
        self.stats = BackendStats()
        self.dedup = Deduplicator(capacity=dedup_capacity)
        self._connections: list[NatsClient] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()

    async def _connect(self) -> NatsClient:
        return await nats.connect(
            servers=self.servers, max_reconnect_attempts=-1, reconnect_time_wait=0.5,
            connect_timeout=2, allow_reconnect=True,
            error_cb=self._on_error, disconnected_cb=self._noop, reconnected_cb=self._noop,
        )

    async def _on_error(self, exc: Exception) -> None:
        self.stats.errors[type(exc).__name__] += 1

    async def _noop(self) -> None:
        return None

    async def ensure_stream(self, timeout_s: float = 30.0) -> None:
        """Create the stream (R``replicas``) and the durable pull consumer if missing."""
        nc = await self._connect()
        try:
            js = nc.jetstream(timeout=5)
            deadline = time.monotonic() + timeout_s
            while True:
                try:
                    await js.add_stream(StreamConfig(name=self.stream, subjects=[self.subject],
                                                     num_replicas=self.replicas, storage=StorageType.FILE))
                    await js.add_consumer(self.stream, ConsumerConfig(
                        durable_name=self.durable, ack_policy=AckPolicy.EXPLICIT, deliver_policy=DeliverPolicy.ALL,
                        ack_wait=self.ack_wait_s, max_ack_pending=50_000, max_waiting=512))
                    return
                except (nats.errors.TimeoutError, nats.js.errors.ServiceUnavailableError,
                        nats.js.errors.NoStreamResponseError):
                    if time.monotonic() > deadline:
                        raise
                    await asyncio.sleep(0.2)
        finally:
            await nc.close()

    async def start(self) -> None:
        await self.ensure_stream()
        for index in range(self.workers):
            nc = await self._connect()
            self._connections.append(nc)
            self._tasks.append(asyncio.create_task(self._work(index, nc), name=f"backend-worker-{index}"))

    async def stop(self) -> None:
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        for nc in self._connections:
            with contextlib.suppress(nats.errors.Error):
                await nc.close()
        self._connections.clear()

    async def _work(self, index: int, nc: NatsClient) -> None:
        js = nc.jetstream(timeout=5)
        subscription = None
        while not self._stopping.is_set():
            try:
                if subscription is None:
                    subscription = await js.pull_subscribe_bind(self.durable, self.stream)
                messages = await subscription.fetch(FETCH_BATCH, timeout=FETCH_TIMEOUT_S)
            except nats.errors.TimeoutError:
                continue
            except (nats.errors.Error, nats.js.errors.Error) as exc:
                # A node lost or the cluster restarting: the client reconnects by itself.
                self.stats.errors[type(exc).__name__] += 1
                await asyncio.sleep(0.2)
                continue
            for message in messages:
                self._handle(index, message.subject, message.data)
                with contextlib.suppress(nats.errors.Error):
                    await message.ack()

    def _handle(self, worker: int, subject: str, data: bytes) -> None:
        stats = self.stats
        stats.messages += 1
        stats.per_worker[worker] += 1
        decoded = decode_message(subject_to_topic(subject), data, prefix=self.prefix)
        if not decoded.valid:
            stats.invalid += 1
            if len(stats.invalid_examples) < 5:
                stats.invalid_examples.append(f"{subject}: {decoded.error}")
            return
        if decoded.kind == "state":
            stats.states += 1
            return
        now = time.time()
        for record in decoded.records:
            stats.records += 1
            if not self.dedup.first_time(record.id):
                stats.duplicates += 1
                continue
            stats.ids.add(record.id)
            if stats.first_record_s is None:
                stats.first_record_s = now
            stats.last_record_s = now

    async def wait_for(self, expected: set[str], timeout_s: float) -> set[str]:
        """Wait until every id in ``expected`` was consumed (or the timeout); return the missing."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            missing = expected - self.stats.ids
            if not missing:
                return missing
            await asyncio.sleep(0.2)
        return expected - self.stats.ids
