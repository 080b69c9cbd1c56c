"""The publisher: committed records from the buffer to the broker, at least once, faults first.

``run()`` loops for ever: connect (capped exponential backoff with full jitter between
attempts, :func:`agent.backoff.full_jitter_delay_s`), publish the retained birth ``online``,
subscribe to the commands it serves, then drain. Each drain round takes about
:data:`ROUND_MESSAGES` messages' worth of records (service lane first, because the buffer hands
out the lowest priority number first), packs them per route into messages of at most
``max_payload_bytes`` and publishes them at QoS 1, keeping at most ``inflight_max`` messages
unacknowledged. Rounds are short, so a fault put while a week of backlog drains is taken in the
next round, ahead of the backlog.

Records are acked in the buffer (deleted) only when the PUBACK of their message arrived. On a
lost connection they are released and go again with the same ids; a PUBACK with a reason code
>= 0x80 (MQTT 5, e.g. 0x87 not authorized) releases them, raises an alarm and holds that
stream back for ``REFUSED_HOLD_S``. A message (records, birth, command response) without PUBACK
for ``mqtt.puback_timeout_s`` after it was sent drops the connection (see :mod:`.client`).

The retained state: the only normal DISCONNECT is the one after the broker acknowledged the
retained ``offline`` of a clean stop. Every other end of a connection (lost, PUBACK timeout,
stopped while the broker does not answer) closes it without DISCONNECT, so that the broker
publishes the will, ``offline`` too. So after any stop the retained state is ``offline``.

Commands: the gateway subscribes to ``<prefix>/<gw>/cmd/<name>`` for each command it serves
(:data:`agent.commands.catalog.COMMANDS`), never to a filter that matches its own
``cmd/response`` (MQTT 5: with no-local as well). Anything else that arrives (its own response
through a stale subscription, an unknown command name) is counted in ``stray_messages`` and
never answered. A resumed session may still hold the ``cmd/+`` subscription of an earlier
version: it is removed after each connect that finds the session present.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import msgspec

from heatgate.agent.commands.catalog import COMMANDS
from heatgate.agent.config import MqttConfig
from heatgate.agent.payloads import STREAMS, StatePayload
from heatgate.agent.publish.client import Incoming, MqttClient, Will
from heatgate.agent.publish.errors import ConnectError, ConnectionLost, NotConnected, PublishError, PublishRefused
from heatgate.agent.publish.packing import Packed, pack_batch, utc_now
from heatgate.backoff import Backoff
from heatgate.buffer.api import Buffer, TakenBatch
from heatgate.buffer.batch import IdChain
from heatgate.logs import get_logger

__all__ = ["Publisher"]

log = get_logger("heatgate.publish")

REFUSED_HOLD_S = 60.0
"""How long a stream whose publish the broker refused is held back before trying again."""
ROUND_MESSAGES = 8
"""A drain round takes up to this many messages' worth of records, so that a round's fixed costs
(the buffer's thread hop, packing, settling) are shared by several messages..."""
ROUND_TAKE_BUDGET_S = 0.005
"""...as long as the buffer hands them out within this: a fault committed meanwhile waits for the
round being taken (one round is held at most). A slow buffer gets rounds of
:data:`ROUND_RECORDS_MIN`."""
ROUND_RECORDS_MIN = 512
ROUND_RECORDS_MAX = 4096
ENVELOPE_BYTES_MAX = 256
"""A message's envelope (schema, stream, gateway, sent_at) takes fewer bytes than this."""
BIRTH_TIMEOUT_S = 10.0
"""A new connection proves itself sooner: its birth is acknowledged within this (or within
``mqtt.puback_timeout_s`` if shorter), else it is dropped. Measured from the birth's own send."""
OFFLINE_TIMEOUT_S = 3.0
"""A clean stop waits this long for the PUBACK of ``offline`` (the daemon gives the publisher's
stop 5 s); without it the connection is closed so that the broker publishes the will."""
ALARMS_MAX = 20
COMMANDS_IN_PROGRESS_MAX = 256
"""Incoming command messages handled at once; more are shed and counted (``commands_shed``)."""

_PUBLISHED = frozenset(STREAMS)

CommandHook = Callable[[str, bytes, dict[str, Any]], Awaitable[None]]
_state_encoder = msgspec.json.Encoder()


class Publisher:
    """Drains a :class:`buffer.api.Buffer` to the broker. See the module docstring.

    ``health()`` is sampled for the birth message; ``restricted()`` names streams that must not
    be published now (data-subject restriction); ``on_connectivity(event, target, reason)``
    hears ``connected`` / ``disconnected`` / ``connect_failed`` (called on the loop's thread).
    Set ``on_command`` to receive messages on ``<prefix>/<gw>/cmd/<name>`` (one topic per
    command served) as ``(topic, payload, properties)`` with ``correlation_data`` /
    ``response_topic`` properties.
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
        self.command_topics = frozenset(f"{self.prefix}/{gateway_id}/cmd/{name}" for name in COMMANDS)
        self.response_topic = f"{self.prefix}/{gateway_id}/cmd/response"
        self.legacy_command_filter = f"{self.prefix}/{gateway_id}/cmd/+"
        """Subscribed by earlier versions; matches ``cmd/response``. Removed from a resumed session."""
        self.target = f"{mqtt.host}:{mqtt.port}"
        self._client: MqttClient | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._running = False
        self._finished = asyncio.Event()
        self._held: dict[str, float] = {}  # stream -> monotonic time until which it is held back
        self._command_tasks: set[asyncio.Task[None]] = set()
        self._backoff = Backoff(min_s=mqtt.reconnect_min_s, max_s=mqtt.reconnect_max_s)
        self._inflight_records = 0
        self._window: dict[int, Packed] = {}  # message id -> drain message in flight
        self._answers: list[tuple[Packed, PublishRefused | None]] = []  # answered, not yet settled
        self._waiter: asyncio.Future[None] | None = None  # the drain's wait, resolved by _news()
        self._ready: deque[Packed] = deque()  # packed, not yet sent (one round at most)
        self._round_records = ROUND_RECORDS_MIN  # records per round, from the last round's sizes
        self._pump_error: ConnectionLost | None = None
        self._stats: dict[str, Any] = {
            "connected": False,
            "connected_since": None,
            "last_error": None,
            "published": 0,
            "published_messages": 0,
            "refused": 0,
            "reconnects": 0,
            "stray_messages": 0,
            "commands_shed": 0,
            "puback_timeouts_in_row": 0,
        }
        self._last_ack_monotonic = time.monotonic()
        self._alarms: deque[str] = deque(maxlen=ALARMS_MAX)

    # ---- public surface -------------------------------------------------------------------

    def wake(self) -> None:
        """New records were committed: drain now (a fault goes ahead of the backlog)."""
        self._wake.set()
        self._news()

    @property
    def stray_messages(self) -> int:
        """Messages received on a topic that is not a served command, dropped unanswered."""
        count: int = self._stats["stray_messages"]
        return count

    def status(self) -> dict[str, Any]:
        """connected, connected_since (epoch s), last_error, published (records), refused,
        inflight (records), alarms, and counters; ``stray_messages``: messages received on a topic
        that is not a served command (e.g. the gateway's own responses), dropped unanswered;
        ``oldest_unacked_age_s``: how long the oldest message in flight has waited for its PUBACK
        (None when nothing is in flight); at ``mqtt.puback_timeout_s`` the connection is dropped."""
        client = self._client
        oldest_s = client.oldest_unacked_age_s() if client is not None else None
        return {
            **self._stats,
            "inflight": self._inflight_records,
            "since_last_ack_s": round(time.monotonic() - self._last_ack_monotonic, 3),
            "alarms": list(self._alarms),
            "held_streams": sorted(self._held),
            "oldest_unacked_age_s": round(oldest_s, 3) if oldest_s is not None else None,
        }

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
        await client.publish(
            topic, payload, qos=qos, retain=retain, correlation_data=correlation_data, response_topic=response_topic
        )

    async def run(self) -> None:
        """Connect, publish, reconnect, for ever; returns after :meth:`stop`."""
        self._running = True
        try:
            while not self._stopping:
                try:
                    await self._connect_and_drain()
                except ConnectError as exc:
                    self._stats["last_error"] = str(exc)
                    log.warning("publish.connect_failed", url=self.config.url, error=exc.reason)
                    self._connectivity("connect_failed", str(exc))
                except (ConnectionLost, NotConnected) as exc:
                    # NotConnected: the connection dropped between a check and a publish/subscribe.
                    reason = exc.reason if isinstance(exc, ConnectionLost) else str(exc)
                    self._stats["last_error"] = str(exc)
                    if reason.startswith("no PUBACK"):
                        self._stats["puback_timeouts_in_row"] += 1
                    if not self._stopping:
                        log.warning("publish.connection_lost", url=self.config.url, error=reason)
                        self._connectivity("disconnected", reason)
                if self._stopping:
                    break
                delay_s = self._backoff.next_delay_s()
                log.info("publish.reconnecting", in_s=round(delay_s, 2))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopped.wait(), delay_s)
        finally:
            for task in list(self._command_tasks):
                task.cancel()
            await asyncio.gather(*self._command_tasks, return_exceptions=True)
            client, self._client = self._client, None
            if client is not None:
                await client.disconnect(with_will=True)
            self._stats["connected"] = False
            self._running = False
            self._finished.set()

    async def stop(self) -> None:
        """Make ``run()`` return, and wait for it. Connected: the retained ``offline`` is
        published and, once acknowledged (with every PUBACK before it), the connection closed
        with a normal DISCONNECT. Otherwise the connection ended without DISCONNECT and the
        broker published (or publishes) the will: the retained state is ``offline`` either way."""
        self._stopping = True
        self._stopped.set()
        self.wake()
        if self._running:
            await self._finished.wait()

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
        will = Will(
            self.state_topic,
            _state_encoder.encode(StatePayload(state="offline", gateway=self.gateway_id, version=self.version)),
        )
        client = MqttClient(
            self.config,
            client_id=self.config.client_id or f"heatgate-{self.gateway_id}",
            clean_start=False,
            will=will,
            on_message=self._on_message,
            on_lost=lambda _reason: self.wake(),
            on_answer=self._on_answer,
            after_read=self._pump,
        )
        self._client = client
        offline_acked = False
        try:
            await client.connect()
            self._stats.update(connected=True, connected_since=time.time(), last_error=None)
            self._stats["reconnects"] += 1
            self._backoff.reset()
            self._connectivity("connected", None)
            log.info("publish.connected", url=self.config.url, session_present=client.session_present)
            if self.on_command is not None:
                self._subscribe_commands(client)
            birth_timeout_s = min(BIRTH_TIMEOUT_S, self.config.puback_timeout_s)
            try:
                await asyncio.wait_for(
                    client.publish(self.state_topic, self._state_payload("online"), qos=1, retain=True),
                    birth_timeout_s,
                )
            except PublishRefused as exc:  # the records still go: the ACL may cover them
                self._alarm(f"broker refused the birth message on {exc.topic}: 0x{exc.reason_code:02x} {exc.reason}")
            except TimeoutError:
                raise ConnectionLost(f"no PUBACK for the birth message within {birth_timeout_s:g} s") from None
            offline_acked = await self._drain(client)
        finally:
            self._stats["connected"] = False
            self._client = None
            # A normal DISCONNECT makes the broker discard the will: only after ``offline``.
            await client.disconnect(with_will=not offline_acked)

    def _subscribe_commands(self, client: MqttClient) -> None:
        # Subscribed before the stale filter goes: a command is never without a subscription
        # (a duplicate in between is refused as a replay; a lost one would be gone).
        client.subscribe(sorted(self.command_topics), no_local=True)
        if client.session_present:
            client.unsubscribe([self.legacy_command_filter])

    async def _say_offline(self, client: MqttClient) -> bool:
        """Publish the retained ``offline``; True once the broker acknowledged it."""
        if not client.connected:
            return False
        try:
            await asyncio.wait_for(
                client.publish(self.state_topic, self._state_payload("offline"), qos=1, retain=True),
                OFFLINE_TIMEOUT_S,
            )
        except (PublishError, TimeoutError) as exc:
            log.warning("publish.offline_state_unacknowledged", will="published by the broker", error=str(exc))
            return False
        return True

    async def _drain(self, client: MqttClient) -> bool:
        """Publish until stopped; then say ``offline`` and return whether it was acknowledged
        (PUBACKs come in order: everything sent before it was acknowledged too, and is acked
        below). Raises :class:`ConnectionLost` when the connection ends.

        The drain takes and packs a round of records into ``_ready``; :meth:`_pump` sends from
        there while the window has room: here, and right after the client read PUBACKs (its
        ``after_read``), so that a PUBACK is answered by the next message in the same turn of the
        loop. The window is a dict of the messages in flight by message id; the client reports
        each answer (:meth:`_on_answer`), which only notes it, and the drain settles the answers
        in bulk (acks their records in the buffer) when it next runs: no future and no wake-up
        per message."""
        window, ready = self._window, self._ready
        self._pump_error = None
        try:
            while True:
                if self._stopping:
                    return await self._say_offline(client)
                if not client.connected:
                    raise ConnectionLost(client.lost_reason or "connection closed")
                self._wake.clear()
                had_ready = bool(ready)
                took = False
                if not ready:  # one round is held at most: a new fault waits for it only
                    # Taken and packed even with a full window: the packing (CPU) then overlaps
                    # the PUBACKs' round trip instead of following it.
                    asked_at = time.monotonic()
                    batch = await self.buffer.take_batch(self._round_records, exclude_streams=self._excluded())
                    take_s = time.monotonic() - asked_at
                    batch = await self._drop_unpublishable(batch)
                    if batch.ids:
                        took = True
                        self._size_rounds(batch, take_s)
                        ready.extend(
                            pack_batch(
                                batch,
                                prefix=self.prefix,
                                gateway_id=self.gateway_id,
                                max_payload_bytes=self.config.max_payload_bytes,
                                sent_at=utc_now(),
                            )
                        )
                self._pump()
                if self._pump_error is not None:
                    error, self._pump_error = self._pump_error, None
                    raise error
                if ready:
                    await self._settle(wait=True)  # the window is full: wait for answers
                elif took or had_ready:
                    await self._settle(wait=False)  # the round is sent: take the next at once
                elif window or self._answers:  # answers may have come while the buffer was asked
                    await self._settle(wait=True, or_wake=True)
                else:
                    await self._wake.wait()
        finally:
            # Answered but not yet settled: ack (a clean stop gets PUBACKs up to ``offline``);
            # refused, sent and never answered, or packed and never sent: release.
            answers, self._answers = self._answers, []
            acked = IdChain(p.ids for p, refusal in answers if refusal is None)
            ids = IdChain(
                [p.ids for p, refusal in answers if refusal is not None]
                + [p.ids for p in window.values()]
                + [p.ids for p in ready]
            )
            window.clear()
            ready.clear()
            self._inflight_records = 0
            if acked:
                self._acknowledged()
                self._stats["published"] += len(acked)
                await self.buffer.ack(acked)
            if ids:
                await self.buffer.release(ids)

    def _size_rounds(self, batch: TakenBatch, take_s: float) -> None:
        """Size the next rounds: :data:`ROUND_MESSAGES` full messages of records as large as
        these (whole messages: no short one at a round's end), or what the buffer hands out in
        :data:`ROUND_TAKE_BUDGET_S` at the pace it took this batch, whichever is fewer."""
        records = len(batch)
        record_bytes = max(1, (batch.offsets[-1] - batch.offsets[0]) // records)
        per_message = max(1, (self.config.max_payload_bytes - ENVELOPE_BYTES_MAX) // record_bytes)
        wanted = ROUND_MESSAGES * per_message
        if take_s > 0:
            wanted = min(wanted, int(records * ROUND_TAKE_BUDGET_S / take_s))
        self._round_records = min(ROUND_RECORDS_MAX, max(ROUND_RECORDS_MIN, wanted))

    def _pump(self) -> None:
        """Send ready messages while the window has room (and the drain is neither stopping nor
        disconnected). Runs in the drain and after each read of the client: never raises; a
        failed send is left for the drain to raise."""
        client, ready, window = self._client, self._ready, self._window
        if client is None:
            return
        window_max = self.config.inflight_max
        while ready and len(window) < window_max and not self._stopping and client.connected:
            packed = ready[0]
            try:
                mid = client.send(packed.topic, packed.payload)
            except PublishError as exc:
                self._pump_error = exc if isinstance(exc, ConnectionLost) else ConnectionLost(str(exc))
                self._news()
                return
            ready.popleft()
            window[mid] = packed
            self._inflight_records += len(packed.ids)
            if not ready:
                self._news()  # the round is sent: the drain takes the next one

    def _on_answer(self, mid: int, refusal: PublishRefused | None) -> None:
        """The client's report of a drain message's PUBACK (``refusal`` for a reason code >= 0x80)."""
        packed = self._window.pop(mid, None)
        if packed is None:
            return
        self._answers.append((packed, refusal))
        if not self._ready or not self._window or refusal is not None:
            # The drain has a round to take, or nothing left in flight to wait for, or a refusal
            # to hold its stream back for: wake it. While a packed round waits for room, the pump
            # sends it and the answers are settled with the next wake-up, in bulk.
            self._news()

    def _news(self) -> None:
        """Something a waiting drain looks at changed: an answer, new records, a stop, a lost
        connection."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _settle(self, *, wait: bool, or_wake: bool = False) -> None:
        """Ack what the broker acknowledged, release and hold back what it refused; with ``wait``
        and nothing answered yet, first wait for an answer (or, with ``or_wake``, for new
        records), a stop or a lost connection. No deadline here: a message without PUBACK for
        ``puback_timeout_s`` ends in a lost connection when the client drops it."""
        client = self._client
        if (
            wait
            and not self._answers
            and not (or_wake and self._wake.is_set())
            and not self._stopping
            and self._pump_error is None
            and client is not None
            and client.connected  # news of a lost connection came before this wait, if at all
        ):
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        answers, self._answers = self._answers, []
        if not answers:
            return
        acked: list[Sequence[str]] = []
        for packed, refusal in answers:
            self._inflight_records -= len(packed.ids)
            if refusal is None:
                acked.append(packed.ids)
        if acked:
            ids = IdChain(acked)
            self._acknowledged()
            self._stats["published"] += len(ids)
            self._stats["published_messages"] += len(acked)
            await self.buffer.ack(ids)
        for packed, refusal in answers:
            if refusal is not None:
                await self.buffer.release(packed.ids)
                self._refused(packed, refusal)

    def _refused(self, packed: Packed, exc: PublishRefused) -> None:
        self._stats["refused"] += len(packed.ids)
        self._held[packed.stream] = time.monotonic() + REFUSED_HOLD_S
        alarm = (
            f"broker refused {packed.topic}: 0x{exc.reason_code:02x} {exc.reason}; "
            f"{len(packed.ids)} record(s) kept, stream {packed.stream} held for {REFUSED_HOLD_S:.0f} s"
        )
        self._alarm(alarm)

    def _alarm(self, alarm: str) -> None:
        self._stats["last_error"] = alarm
        self._alarms.append(alarm)
        log.error("publish.alarm", alarm=alarm)

    def _excluded(self) -> frozenset[str]:
        restricted = self._restricted()
        if not self._held:  # the usual drain round
            return restricted
        now = time.monotonic()
        for stream, until in list(self._held.items()):
            if until != float("inf") and until <= now:
                del self._held[stream]
        return restricted | frozenset(self._held)

    async def _drop_unpublishable(self, batch: TakenBatch) -> TakenBatch:
        """Records of a stream that is never published (installer-local...) are released, held
        back for good and reported: they must not leave, and must not block the drain."""
        streams = batch.streams
        if streams <= _PUBLISHED:
            return batch
        bad = streams - _PUBLISHED
        batch, dropped = batch.without_streams(bad)
        await self.buffer.release(dropped)
        for stream in sorted(bad):
            self._held[stream] = float("inf")
            self._alarm(f"records of stream {stream!r} reached the publisher; that stream is never published")
        return batch

    def _acknowledged(self) -> None:
        self._last_ack_monotonic = time.monotonic()
        self._stats["puback_timeouts_in_row"] = 0

    # ---- incoming commands and events -----------------------------------------------------

    def _on_message(self, message: Incoming) -> None:
        hook = self.on_command
        if hook is None:
            return
        if message.topic not in self.command_topics:
            # Never answered: an answer to our own response would come back to us, for ever.
            self._stats["stray_messages"] += 1
            log.debug("publish.stray_dropped", topic=message.topic, own_response=message.topic == self.response_topic)
            return
        if len(self._command_tasks) >= COMMANDS_IN_PROGRESS_MAX:
            # A flood faster than the handlers: shed at the door, counted, so that memory stays bounded.
            self._stats["commands_shed"] += 1
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
            log.warning("publish.command_response_failed", topic=message.topic, error=str(exc))

    def _connectivity(self, event: str, reason: str | None) -> None:
        if self._on_connectivity is not None:
            self._on_connectivity(event, self.target, reason)
