"""The publisher: committed records from the buffer to the broker, at least once, faults first.

``run()`` loops for ever: connect (capped exponential backoff with full jitter between
attempts, :func:`agent.backoff.full_jitter_delay_s`), publish the retained birth ``online``,
subscribe to ``<prefix>/<gw>/cmd/+``, then drain. Each drain round takes a few records
(service lane first, because the buffer hands out the lowest priority number first), packs them
per route into messages of at most ``max_payload_bytes`` and publishes them at QoS 1, keeping at
most ``inflight_max`` messages unacknowledged. Rounds are short, so a fault put while a week of
backlog drains is taken in the next round, ahead of the backlog.

Records are acked in the buffer (deleted) only when the PUBACK of their message arrived. On a
lost connection they are released and go again with the same ids; a PUBACK with a reason code
>= 0x80 (MQTT 5, e.g. 0x87 not authorized) releases them, raises an alarm and holds that
stream back for ``REFUSED_HOLD_S``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from agent.backoff import Backoff
from agent.config import MqttConfig
from agent.logs import get_logger
from agent.payloads import STREAMS, StatePayload
from agent.publish.client import Incoming, MqttClient, Will
from agent.publish.errors import ConnectError, ConnectionLost, NotConnected, PublishError, PublishRefused
from agent.publish.packing import Packed, pack, utc_now
from buffer.api import Buffer, StoredRecord

__all__ = ["Publisher"]

log = get_logger("agent.publish")

REFUSED_HOLD_S = 60.0
"""How long a stream whose publish the broker refused is held back before trying again."""
TAKE_RECORDS_MAX = 512
"""Records per drain round: small enough that a new fault waits for at most one round."""
BIRTH_TIMEOUT_S = 10.0
PUBACK_TIMEOUT_S = 30.0
"""With messages in flight and no PUBACK for this long, the connection is taken as dead."""
ALARMS_MAX = 20

_PUBLISHED = frozenset(STREAMS)

CommandHook = Callable[[str, bytes, dict[str, Any]], Awaitable[None]]
_state_encoder = msgspec.json.Encoder()


class Publisher:
    """Drains a :class:`buffer.api.Buffer` to the broker. See the module docstring.

    ``health()`` is sampled for the birth message; ``restricted()`` names streams that must not
    be published now (data-subject restriction); ``on_connectivity(event, target, reason)``
    hears ``connected`` / ``disconnected`` / ``connect_failed`` (called on the loop's thread).
    Set ``on_command`` to receive messages on ``<prefix>/<gw>/cmd/+`` as
    ``(topic, payload, properties)`` with ``correlation_data`` / ``response_topic`` properties.
    """

    def __init__(
        self,
        mqtt: MqttConfig,
        gateway_id: str,
        buffer: Buffer,
        *,
        version: str,
        health: Callable[[], dict[str, Any]],
        restricted: Callable[[], frozenset[str]] = frozenset,
        on_connectivity: Callable[[str, str, str | None], None] | None = None,
    ) -> None:
        self.config = mqtt
        self.gateway_id = gateway_id
        self.buffer = buffer
        self.version = version
        self._health = health
        self._restricted = restricted
        self._on_connectivity = on_connectivity
        self.on_command: CommandHook | None = None
        self.prefix = mqtt.topic_prefix
        self.state_topic = f"{self.prefix}/{gateway_id}/state"
        self.command_filter = f"{self.prefix}/{gateway_id}/cmd/+"
        self.target = f"{mqtt.host}:{mqtt.port}"
        self._client: MqttClient | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._held: dict[str, float] = {}  # stream -> monotonic time until which it is held back
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(min_s=mqtt.reconnect_min_s, max_s=mqtt.reconnect_max_s)
        self._inflight_records = 0
        self._ack_progress_monotonic = time.monotonic()
        self._stats: dict[str, Any] = {
            "connected": False, "connected_since": None, "last_error": None,
            "published": 0, "published_messages": 0, "refused": 0, "reconnects": 0,
        }
        self._alarms: deque[str] = deque(maxlen=ALARMS_MAX)

    # ---- public surface -------------------------------------------------------------------

    def wake(self) -> None:
        """New records were committed: drain now (a fault goes ahead of the backlog)."""
        self._wake.set()

    def status(self) -> dict[str, Any]:
        """connected, connected_since (epoch s), last_error, published (records), refused,
        inflight (records), alarms, and counters."""
        return {**self._stats, "inflight": self._inflight_records, "alarms": list(self._alarms),
                "held_streams": sorted(self._held)}

    async def publish_raw(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> None:
        """Publish one message outside the buffer (command responses); wait for its PUBACK.
        Raises :class:`NotConnected`, :class:`PublishRefused` or :class:`ConnectionLost`."""
        client = self._client
        if client is None or not client.connected:
            raise NotConnected()
        await client.publish(topic, payload, qos=qos, retain=retain, correlation_data=correlation_data,
                             response_topic=response_topic)

    async def run(self) -> None:
        """Connect, publish, reconnect, for ever; returns after :meth:`stop`."""
        try:
            while not self._stopping:
                try:
                    await self._connect_and_drain()
                except ConnectError as exc:
                    self._stats["last_error"] = str(exc)
                    log.warning("broker connection failed", url=self.config.url, error=exc.reason)
                    self._connectivity("connect_failed", str(exc))
                except (ConnectionLost, NotConnected) as exc:
                    # NotConnected: the connection dropped between a check and a publish/subscribe.
                    reason = exc.reason if isinstance(exc, ConnectionLost) else str(exc)
                    self._stats["last_error"] = str(exc)
                    if not self._stopping:
                        log.warning("broker connection lost", url=self.config.url, error=reason)
                        self._connectivity("disconnected", reason)
                if self._stopping:
                    break
                delay_s = self._backoff.next_delay_s()
                log.info("reconnecting", in_s=round(delay_s, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), delay_s)
        finally:
            for task in list(self._command_tasks):
                task.cancel()
            await asyncio.gather(*self._command_tasks, return_exceptions=True)
            client, self._client = self._client, None
            if client is not None:
                await client.disconnect()
            self._stats["connected"] = False

    async def stop(self) -> None:
        """Publish ``offline`` (retained), disconnect cleanly (no LWT), and make ``run()`` return."""
        self._stopping = True
        client = self._client
        if client is not None and client.connected:
            with contextlib.suppress(PublishError, TimeoutError):
                await asyncio.wait_for(
                    client.publish(self.state_topic, self._state_payload("offline"), qos=1, retain=True),
                    BIRTH_TIMEOUT_S,
                )
            await client.disconnect()
        self._stopped.set()
        self._wake.set()

    # ---- one connection -------------------------------------------------------------------

    def _state_payload(self, state: str) -> bytes:
        payload = StatePayload(
            state=state,  # type: ignore[arg-type]
            gateway=self.gateway_id,
            version=self.version,
            at=utc_now(),
            health=self._health() if state == "online" else {},
        )
        return _state_encoder.encode(payload)

    async def _connect_and_drain(self) -> None:
        will = Will(self.state_topic, _state_encoder.encode(StatePayload(state="offline", gateway=self.gateway_id,
                                                                         version=self.version)))
        client = MqttClient(
            self.config,
            client_id=self.config.client_id or f"heatgate-{self.gateway_id}",
            clean_start=False,
            will=will,
            on_message=self._on_message,
            on_lost=lambda _reason: self._wake.set(),
        )
        self._client = client
        try:
            await client.connect()
            self._stats.update(connected=True, connected_since=time.time(), last_error=None)
            self._stats["reconnects"] += 1
            self._backoff.reset()
            self._connectivity("connected", None)
            log.info("broker connected", url=self.config.url, session_present=client.session_present)
            if self.on_command is not None:
                client.subscribe([self.command_filter])
            try:
                await asyncio.wait_for(
                    client.publish(self.state_topic, self._state_payload("online"), qos=1, retain=True),
                    BIRTH_TIMEOUT_S,
                )
            except PublishRefused as exc:  # the records still go: the ACL may cover them
                self._alarm(f"broker refused the birth message on {exc.topic}: 0x{exc.reason_code:02x} {exc.reason}")
            await self._drain(client)
        except TimeoutError:
            raise ConnectionLost("no PUBACK for the birth message") from None
        finally:
            self._stats["connected"] = False
            self._client = None
            await client.disconnect()

    async def _drain(self, client: MqttClient) -> None:
        window: deque[tuple[asyncio.Future[None], Packed]] = deque()
        window_max = self.config.inflight_max
        try:
            while True:
                if self._stopping:
                    return
                if not client.connected:
                    raise ConnectionLost(client.lost_reason or "connection closed")
                self._wake.clear()
                # Taken and packed even with a full window: the packing (CPU) then overlaps the
                # PUBACKs' round trip instead of following it. One round is held at most.
                records = await self.buffer.take(TAKE_RECORDS_MAX, exclude_streams=self._excluded())
                records = await self._drop_unpublishable(records)
                if records:
                    queue = deque(pack(records, prefix=self.prefix, gateway_id=self.gateway_id,
                                       max_payload_bytes=self.config.max_payload_bytes, sent_at=utc_now()))
                    try:
                        while queue:
                            while len(window) >= window_max:
                                await self._settle(window, wait=True, or_wake=False)
                            # The connection may have dropped while we waited (for the buffer or
                            # for PUBACKs that all arrived just before the close): not an error of
                            # the drain, a lost connection like any other.
                            if not client.connected:
                                raise ConnectionLost(client.lost_reason or "connection closed")
                            future = client.publish(queue[0].topic, queue[0].payload, qos=1)
                            packed = queue.popleft()
                            window.append((future, packed))
                            self._inflight_records += len(packed.ids)
                    finally:
                        if queue:  # taken but never published (connection lost, stopping)
                            await self.buffer.release([i for p in queue for i in p.ids])
                    await self._settle(window, wait=False)
                elif window:
                    await self._settle(window, wait=True)
                else:
                    await self._wake.wait()
        finally:
            # Acknowledged but not yet settled: ack (a clean stop gets PUBACKs up to ``offline``).
            acked = [i for f, p in window if f.done() and not f.cancelled() and f.exception() is None for i in p.ids]
            ids = [i for f, p in window if not (f.done() and not f.cancelled() and f.exception() is None)
                   for i in p.ids]
            for future, _packed in window:
                future.cancel()
            window.clear()
            self._inflight_records = 0
            if acked:
                self._stats["published"] += len(acked)
                await self.buffer.ack(acked)
            if ids:
                await self.buffer.release(ids)

    async def _settle(
        self, window: deque[tuple[asyncio.Future[None], Packed]], *, wait: bool, or_wake: bool = True
    ) -> None:
        """Ack what the broker acknowledged (from the oldest on); with ``wait``, first wait for the
        oldest message (or, ``or_wake``, a wake-up, so that a new fault is taken without delay)."""
        now = time.monotonic()
        if not window:
            self._ack_progress_monotonic = now
        # A broker that keeps the connection (answers pings) but never acknowledges would hold
        # the records in flight for ever: past PUBACK_TIMEOUT_S without any PUBACK, the
        # connection is dropped, the records released, and they go again with the same ids.
        remaining_s = PUBACK_TIMEOUT_S - (now - self._ack_progress_monotonic)
        if window and not window[0][0].done() and remaining_s <= 0:
            raise ConnectionLost(f"no PUBACK within {PUBACK_TIMEOUT_S:.0f} s")
        if wait and window and not window[0][0].done() and not or_wake:
            # Awaited directly under a deadline; its outcome is read below. Cancelling this task
            # cancels it: _drain releases its records.
            with contextlib.suppress(PublishError, TimeoutError):
                async with asyncio.timeout(remaining_s):
                    await asyncio.shield(window[0][0])
        elif wait and window and not window[0][0].done():
            waker: asyncio.Future[Any] = asyncio.ensure_future(self._wake.wait())
            oldest: asyncio.Future[Any] = window[0][0]
            try:
                await asyncio.wait({oldest, waker}, timeout=remaining_s, return_when=asyncio.FIRST_COMPLETED)
            finally:
                waker.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await waker
        acked: list[str] = []
        refused: list[tuple[Packed, PublishRefused]] = []
        lost: ConnectionLost | None = None
        while window and window[0][0].done():
            future, packed = window.popleft()
            self._inflight_records -= len(packed.ids)
            exc = future.exception() if not future.cancelled() else ConnectionLost("cancelled")
            if exc is None:
                acked.extend(packed.ids)
                self._stats["published"] += len(packed.ids)
                self._stats["published_messages"] += 1
            elif isinstance(exc, PublishRefused):
                refused.append((packed, exc))
            else:
                lost = exc if isinstance(exc, ConnectionLost) else ConnectionLost(str(exc))
                window.appendleft((future, packed))
                self._inflight_records += len(packed.ids)
                break
        if acked:
            self._ack_progress_monotonic = time.monotonic()
            await self.buffer.ack(acked)
        for packed, exc in refused:
            await self.buffer.release(packed.ids)
            self._refused(packed, exc)
        if lost is not None:
            raise lost

    def _refused(self, packed: Packed, exc: PublishRefused) -> None:
        self._stats["refused"] += len(packed.ids)
        self._held[packed.stream] = time.monotonic() + REFUSED_HOLD_S
        alarm = (f"broker refused {packed.topic}: 0x{exc.reason_code:02x} {exc.reason}; "
                 f"{len(packed.ids)} record(s) kept, stream {packed.stream} held for {REFUSED_HOLD_S:.0f} s")
        self._alarm(alarm)

    def _alarm(self, alarm: str) -> None:
        self._stats["last_error"] = alarm
        self._alarms.append(alarm)
        log.error("publish alarm", alarm=alarm)

    def _excluded(self) -> frozenset[str]:
        now = time.monotonic()
        for stream, until in list(self._held.items()):
            if until != float("inf") and until <= now:
                del self._held[stream]
        return self._restricted() | frozenset(self._held)

    async def _drop_unpublishable(self, records: list[StoredRecord]) -> list[StoredRecord]:
        """Records of a stream that is never published (installer-local...) are released, held
        back for good and reported: they must not leave, and must not block the drain."""
        if {r.stream for r in records} <= _PUBLISHED:
            return records
        bad = [r for r in records if r.stream not in STREAMS]
        streams = sorted({r.stream for r in bad})
        await self.buffer.release([r.id for r in bad])
        for stream in streams:
            self._held[stream] = float("inf")
            self._alarm(f"records of stream {stream!r} reached the publisher; that stream is never published")
        return [r for r in records if r.stream in STREAMS]

    # ---- incoming commands and events -----------------------------------------------------

    def _on_message(self, message: Incoming) -> None:
        hook = self.on_command
        if hook is None or not message.topic.startswith(self.command_filter[:-1]):
            return
        task = asyncio.get_running_loop().create_task(
            self._run_command(hook, message), name=f"command:{message.topic.rsplit('/', 1)[-1]}"
        )
        self._command_tasks.add(task)
        task.add_done_callback(self._command_tasks.discard)

    async def _run_command(self, hook: CommandHook, message: Incoming) -> None:
        try:
            await hook(message.topic, message.payload, dict(message.properties))
        except PublishError as exc:
            log.warning("command response not published", topic=message.topic, error=str(exc))

    def _connectivity(self, event: str, reason: str | None) -> None:
        if self._on_connectivity is not None:
            self._on_connectivity(event, self.target, reason)
