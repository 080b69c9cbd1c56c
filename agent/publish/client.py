"""The one adapter around paho-mqtt 2.x: one connection, driven by the asyncio loop.

paho runs without its own network thread: its socket is registered with the event loop
(``add_reader``/``add_writer``, as aiomqtt does), so every paho callback after the handshake
runs on the loop's thread. Only the blocking TCP connect and TLS handshake run in the default
executor; the socket callbacks paho makes from there are handed to the loop with
``call_soon_threadsafe``.

Writing: what is published in one turn of the loop is written in one burst right after it
(and what the drain sends after a read, at once): on loopback most of a send's CPU is waking the
broker, once per burst instead of once per message. Two ways to publish: :meth:`MqttClient.publish`
returns a future per message (the birth, ``offline``, command responses); :meth:`MqttClient.send`
returns the message id only and reports the PUBACK through ``on_answer`` (the drain's many
messages: no future, no callbacks, no task wake-up per message); ``after_read`` is called after
each read, so that the drain answers PUBACKs with its next messages in the same turn.

One :class:`MqttClient` is one connection attempt and its life. Reconnecting is the caller's
job (:mod:`agent.publish.publisher` waits with :func:`agent.backoff.full_jitter_delay_s`),
with a fresh client each time; the broker keeps the session (clean start off, session expiry)
so subscriptions and queued commands survive. Records are never lost by a drop: unacknowledged
ones fail their futures with :class:`ConnectionLost` and the buffer hands them out again.

PUBACK timeout: every QoS 1 message in flight carries the time it was sent. When the oldest one
has waited ``mqtt.puback_timeout_s`` (checked by the keepalive task, about once a second), the
connection is taken as dead and dropped without DISCONNECT, so the broker publishes the will.
Only the age of the oldest unacknowledged message counts: a connection that was quiet for
hours is as fresh as a new one, and a new connection starts with nothing in flight.

TLS: on when the URL is ``mqtts://``, with the configured CA (system CAs if none), TLS >= 1.2,
the host name checked, and the client certificate for mutual TLS. A TLS failure is a
:class:`ConnectError`; there is never a retry in plaintext (``mqtt://`` is only accepted for a
loopback broker, by the config).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from heatgate.agent.config import MqttConfig
from heatgate.agent.publish.errors import ConnectError, ConnectionLost, NotConnected, PublishRefused
from heatgate.agent.publish.short_ack import client_class

__all__ = ["Incoming", "MqttClient", "TlsFiles", "Will", "build_tls_context"]

MISC_INTERVAL_S = 1.0


@dataclass(frozen=True, slots=True)
class Will:
    """Last will, published by the broker if the connection dies without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """Overrides of the config's TLS files (``heatgate tail --ca/--cert/--key``)."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None


@dataclass(frozen=True, slots=True)
class Incoming:
    """A message received on a subscription."""

    topic: str
    payload: bytes
    qos: int
    retain: bool
    properties: dict[str, Any] = field(default_factory=dict)


def build_tls_context(config: MqttConfig, overrides: TlsFiles | None = None) -> ssl.SSLContext:
    """Client TLS context: the configured CA (or the system's), TLS >= 1.2, host name checked,
    and the client certificate and key for mutual TLS when given."""
    ca_file = (overrides and overrides.ca_file) or config.ca_file
    cert_file = (overrides and overrides.cert_file) or config.cert_file
    key_file = (overrides and overrides.key_file) or config.key_file
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=ca_file)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = True
    context.verify_mode = ssl.CERT_REQUIRED
    if cert_file:
        context.load_cert_chain(cert_file, key_file)
    return context


def _props_dict(properties: Properties | None) -> dict[str, Any]:
    if properties is None:
        return {}
    found: dict[str, Any] = {}
    for name in ("CorrelationData", "ResponseTopic", "UserProperty", "ContentType", "MessageExpiryInterval"):
        if hasattr(properties, name):
            found[name] = getattr(properties, name)
    return {
        {
            "CorrelationData": "correlation_data",
            "ResponseTopic": "response_topic",
            "UserProperty": "user_properties",
            "ContentType": "content_type",
            "MessageExpiryInterval": "message_expiry_s",
        }[k]: v
        for k, v in found.items()
    }


class _ErrorKeeper(logging.Logger):
    """What paho logs, reduced to its last error (the detail of a lost connection).

    paho formats a line for ``on_log`` for every packet in and out (two per message); a logger
    gets the format and its arguments instead, and this one formats only errors."""

    def __init__(self, client: MqttClient) -> None:
        super().__init__("heatgate.paho")
        self._client = client

    def log(self, level: int, msg: object, *args: object, **_kwargs: Any) -> None:
        if level >= logging.ERROR:
            self._client._last_log_error = str(msg) % args if args else str(msg)


class MqttClient:
    """One MQTT connection. Create, ``await connect()``, publish/subscribe, ``await disconnect()``.

    ``on_message`` and ``on_lost`` are called on the event loop's thread.
    """

    def __init__(
        self,
        config: MqttConfig,
        *,
        client_id: str | None = None,
        clean_start: bool = False,
        will: Will | None = None,
        tls_files: TlsFiles | None = None,
        on_message: Callable[[Incoming], None] | None = None,
        on_lost: Callable[[str], None] | None = None,
        on_answer: Callable[[int, PublishRefused | None], None] | None = None,
        after_read: Callable[[], None] | None = None,
        connect_timeout_s: float = 10.0,
    ) -> None:
        self.config = config
        self.url = config.url
        self.client_id = client_id or config.client_id or f"heatgate-{uuid.uuid4().hex[:12]}"
        self._v5 = config.protocol == "5"
        self._clean_start = clean_start
        self._on_message_cb = on_message
        self._on_lost_cb = on_lost
        self._on_answer_cb = on_answer
        self._after_read_cb = after_read
        self._connect_timeout_s = connect_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        # mid -> (future, topic, monotonic time sent); insertion order is send order, so the
        # first entry is the oldest unacknowledged message. No future for a message of send():
        # its answer goes to ``on_answer``.
        self._pending: dict[int, tuple[asyncio.Future[None] | None, str, float]] = {}
        self._puback_timeout_s = config.puback_timeout_s
        self._connack: asyncio.Future[bool] | None = None
        self._misc_task: asyncio.Task[None] | None = None
        self._fd: int | None = None
        self._last_log_error: str | None = None
        self._writing_now = False  # publish() writes right away: no writer registration for it
        self._writer_added = False  # the loop's writer is registered (only for what a write left)
        self._in_message_cb = False
        self._flush: asyncio.Handle | None = None  # the write of this turn's messages, scheduled
        self.connected = False
        self.lost_reason: str | None = None
        self.session_present = False

        self._client = client_class()(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5 if self._v5 else mqtt.MQTTv311,
            clean_session=None if self._v5 else clean_start,
        )
        # Our window (Publisher) bounds what is in flight; paho must neither hold back nor drop.
        self._client.max_inflight_messages_set(max(config.inflight_max, 1) * 4)
        self._client.max_queued_messages_set(0)
        self._client.connect_timeout = connect_timeout_s
        if config.tls:
            try:
                self._client.tls_set_context(build_tls_context(config, tls_files))
            except (OSError, ssl.SSLError) as exc:
                raise ConnectError(self.url, f"TLS set-up failed: {exc}", tls=True) from None
        if config.username is not None:
            password = None
            if config.password_file:
                with open(config.password_file, encoding="utf-8") as handle:
                    password = handle.read().strip()
            self._client.username_pw_set(config.username, password)
        if will is not None:
            self._client.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain)
        client = self._client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.enable_logger(_ErrorKeeper(self))
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_socket_register_write
        client.on_socket_unregister_write = self._on_socket_unregister_write

    # ---- connecting -----------------------------------------------------------------------

    async def connect(self) -> bool:
        """Connect; return whether the broker still had our session. Raise :class:`ConnectError`."""
        loop = self._loop = asyncio.get_running_loop()
        self._connack = loop.create_future()
        kwargs: dict[str, Any] = {"keepalive": self.config.keepalive_s}
        if self._v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 0 if self._clean_start else self.config.session_expiry_s
            kwargs["clean_start"] = self._clean_start
            kwargs["properties"] = props
        try:
            await loop.run_in_executor(None, lambda: self._client.connect(self.config.host, self.config.port, **kwargs))
        except ssl.SSLCertVerificationError as exc:
            self._teardown()
            raise ConnectError(
                self.url,
                f"TLS: the broker's certificate failed verification ({exc.verify_message}); "
                "check mqtt.ca_file and the broker's host name",
                tls=True,
            ) from None
        except ssl.SSLError as exc:
            self._teardown()
            raise ConnectError(self.url, f"TLS handshake failed: {exc.reason or exc}", tls=True) from None
        except (OSError, ValueError) as exc:
            self._teardown()
            raise ConnectError(self.url, f"{type(exc).__name__}: {exc}", tls=self.config.tls) from None
        # ``asyncio.wait`` neither cancels nor wraps the future: whatever paho reports later (a
        # CONNACK, or the connection closing after we gave up) lands on a future we still own.
        try:
            await asyncio.wait({self._connack}, timeout=self._connect_timeout_s)
        except asyncio.CancelledError:
            self._teardown()
            raise
        if not self._connack.done():
            self._teardown()  # cancels _connack: a late report from paho finds it done
            raise ConnectError(self.url, f"no CONNACK within {self._connect_timeout_s} s", tls=self.config.tls)
        try:
            self.session_present = self._connack.result()
        except ConnectError:
            self._teardown()
            raise
        self._misc_task = loop.create_task(self._misc_loop(), name="mqtt-misc")
        return self.session_present

    def _on_connect(self, _c: mqtt.Client, _u: object, flags: Any, reason: ReasonCode, _p: object) -> None:
        assert self._connack is not None
        if self._connack.done():
            return
        if reason.is_failure:
            self._connack.set_exception(
                ConnectError(
                    self.url, f"broker refused the connection: {reason}", reason_code=reason.value, tls=self.config.tls
                )
            )
            self._connack.exception()  # as in _on_disconnect
            return
        self.connected = True
        self._connack.set_result(bool(getattr(flags, "session_present", False)))

    def _on_disconnect(self, _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        was_connected = self.connected
        self.connected = False
        # The first reason wins: after _drop() closed the socket, paho may still report its own.
        detail = self.lost_reason or self._last_log_error or str(reason)
        self.lost_reason = detail
        if self._connack is not None and not self._connack.done():
            # Closed before CONNACK: typically a TLS alert (client certificate missing or refused).
            self._connack.set_exception(
                ConnectError(self.url, f"connection closed before CONNACK: {detail}", tls=self.config.tls)
            )
            self._connack.exception()  # retrieved here too: connect() may have stopped waiting
        self._fail_pending(detail)
        if was_connected and self._on_lost_cb is not None:
            self._on_lost_cb(detail)

    # ---- the socket on the event loop -------------------------------------------------------

    def _in_loop(self, func: Callable[[], None]) -> None:
        loop = self._loop
        assert loop is not None
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            func()
        else:
            loop.call_soon_threadsafe(func)

    def _on_socket_open(self, client: mqtt.Client, _u: object, sock: Any) -> None:
        fd = sock.fileno()
        self._fd = fd
        self._in_loop(lambda: self._add_reader(fd))

    def _add_reader(self, fd: int) -> None:
        if self._fd == fd and self._loop is not None:
            self._loop.add_reader(fd, self._on_readable)

    def _on_socket_close(self, _c: mqtt.Client, _u: object, sock: Any) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            self._in_loop(lambda: self._remove_fd(fd))

    def _remove_fd(self, fd: int) -> None:
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self._writer_added = False

    def _on_socket_register_write(self, _c: mqtt.Client, _u: object, sock: Any) -> None:
        if self._writing_now:
            return  # publish() calls loop_write() next and registers the writer only if needed
        fd = sock.fileno()
        self._in_loop(lambda: self._add_writer(fd))

    def _add_writer(self, fd: int) -> None:
        if self._fd == fd and self._loop is not None:
            self._loop.add_writer(fd, self._client.loop_write)
            self._writer_added = True

    def _on_socket_unregister_write(self, _c: mqtt.Client, _u: object, sock: Any) -> None:
        fd = self._fd
        if fd is None:
            return
        if not self._writer_added and self._on_loop_thread():
            return  # paho says so after every write; nothing to remove (an epoll change per message)
        self._in_loop(lambda: self._remove_writer(fd))

    def _on_loop_thread(self) -> bool:
        try:
            return asyncio.get_running_loop() is self._loop
        except RuntimeError:
            return False

    def _remove_writer(self, fd: int) -> None:
        self._writer_added = False
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_writer(fd)

    async def _misc_loop(self) -> None:
        """Keepalive pings and ping timeouts; the PUBACK timeout (see the module docstring)."""
        while self._client.loop_misc() == mqtt.MQTT_ERR_SUCCESS:
            age_s = self.oldest_unacked_age_s()
            if age_s is not None and age_s >= self._puback_timeout_s:
                self._drop(f"no PUBACK within {self._puback_timeout_s:g} s")
                return
            wait_s = MISC_INTERVAL_S
            if age_s is not None:
                wait_s = min(wait_s, self._puback_timeout_s - age_s)
            await asyncio.sleep(wait_s)

    def _drop(self, reason: str) -> None:
        """Close the socket without DISCONNECT: the broker publishes the will (``offline``).
        In-flight messages fail with :class:`ConnectionLost`; ``on_lost`` hears ``reason``."""
        was_connected = self.connected
        self.connected = False
        self.lost_reason = self.lost_reason or reason
        self._teardown()
        self._fail_pending(self.lost_reason)
        if was_connected and self._on_lost_cb is not None:
            self._on_lost_cb(self.lost_reason)

    # ---- publishing -----------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        qos: int = 1,
        retain: bool = False,
        correlation_data: bytes | None = None,
        response_topic: str | None = None,
    ) -> asyncio.Future[None]:
        """Queue a message; the future resolves on PUBACK (at once for QoS 0), fails with
        :class:`PublishRefused` for a reason code >= 0x80 or :class:`ConnectionLost`."""
        if not self.connected or self._loop is None:
            raise NotConnected()
        properties = None
        if self._v5 and (correlation_data is not None or response_topic is not None):
            properties = Properties(PacketTypes.PUBLISH)
            if correlation_data is not None:
                properties.CorrelationData = correlation_data
            if response_topic is not None:
                properties.ResponseTopic = response_topic
        future: asyncio.Future[None] = self._loop.create_future()
        mid = self._queue(topic, payload, qos, retain, properties)
        if qos == 0:
            future.set_result(None)
        else:
            # Registered before the write: a write that finds the connection dead fails it.
            self._pending[mid] = (future, topic, time.monotonic())
        return future

    def send(self, topic: str, payload: bytes) -> int:
        """Queue a QoS 1 message without a future (the drain's many messages): returns its
        message id, and ``on_answer(mid, None)`` hears its PUBACK, ``on_answer(mid, refusal)`` a
        reason code >= 0x80. A lost connection answers nothing: ``on_lost`` hears it, and every
        message sent and not answered is unacknowledged. Counts for the PUBACK timeout."""
        if not self.connected or self._loop is None:
            raise NotConnected()
        mid = self._queue(topic, payload, 1, False, None)
        self._pending[mid] = (None, topic, time.monotonic())
        return mid

    def _queue(self, topic: str, payload: bytes, qos: int, retain: bool, properties: Properties | None) -> int:
        """Hand the message to paho, and have it written once the caller's turn of the loop ends."""
        assert self._loop is not None
        write_soon = not self._in_message_cb  # paho must not be re-entered from its own callback
        self._writing_now = write_soon
        try:
            info = self._client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        finally:
            self._writing_now = False
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionLost(mqtt.error_string(info.rc))
        if write_soon and self._flush is None:
            # Everything published in this turn goes out in one burst, right after it: a send per
            # message as it is made wakes the broker once per message (on loopback, most of a
            # send's CPU), a burst wakes it once.
            self._flush = self._loop.call_soon(self._write_burst)
        return info.mid

    def _on_readable(self) -> None:
        """Read what arrived (paho calls back for each packet); then ``after_read`` (the drain
        sends the next messages for the PUBACKs just read), and what it sent is written at once."""
        self._client.loop_read()
        if self._after_read_cb is not None and self.connected:
            self._after_read_cb()
            if self._flush is not None:
                self._flush.cancel()
                self._write_burst()

    def _write_burst(self) -> None:
        """The burst of messages published in the turn of the loop that just ended, written."""
        self._flush = None
        if self._fd is not None:
            self._write_now()

    def _write_now(self) -> None:
        """Write what paho queued, without waiting for the loop's writer (a loop turn and two
        epoll changes per message); only what the socket does not take waits for the writer."""
        self._client.loop_write()  # on a dead socket this reports the disconnect (_on_disconnect)
        fd = self._fd
        if fd is not None and self._client.want_write():
            self._add_writer(fd)

    def _on_publish(self, _c: mqtt.Client, _u: object, mid: int, reason: ReasonCode, _p: object) -> None:
        entry = self._pending.pop(mid, None)
        if entry is None:
            return
        future, topic, _sent = entry
        if future is None:
            if self._on_answer_cb is not None:
                refusal = PublishRefused(topic, reason.value, str(reason)) if reason.is_failure else None
                self._on_answer_cb(mid, refusal)
            return
        if future.done():
            return
        if reason.is_failure:
            future.set_exception(PublishRefused(topic, reason.value, str(reason)))
        else:
            future.set_result(None)

    def _fail_pending(self, reason: str) -> None:
        pending, self._pending = self._pending, {}
        for future, _topic, _sent in pending.values():
            if future is not None and not future.done():
                future.set_exception(ConnectionLost(reason))
                future.exception()  # a caller that stopped waiting must not warn "never retrieved"

    @property
    def inflight(self) -> int:
        return len(self._pending)

    def oldest_unacked_age_s(self) -> float | None:
        """Seconds since the oldest QoS 1 message still waiting for its PUBACK was sent."""
        for _future, _topic, sent_monotonic in self._pending.values():
            return time.monotonic() - sent_monotonic
        return None

    # ---- subscribing ----------------------------------------------------------------------

    def subscribe(self, topics: list[str], qos: int = 1, *, no_local: bool = False) -> None:
        """Subscribe (SUBACK not awaited). ``no_local`` (MQTT 5 only; 3.1.1 has no such option):
        the broker does not send back what this client publishes itself."""
        if not self.connected:
            raise NotConnected()
        if self._v5:
            options = SubscribeOptions(qos=qos, noLocal=no_local)
            self._client.subscribe([(topic, options) for topic in topics])
        else:
            self._client.subscribe([(topic, qos) for topic in topics])

    def unsubscribe(self, topics: list[str]) -> None:
        """Remove subscriptions (UNSUBACK not awaited); one that does not exist is harmless."""
        if not self.connected:
            raise NotConnected()
        self._client.unsubscribe(topics)

    def _on_message(self, _c: mqtt.Client, _u: object, message: mqtt.MQTTMessage) -> None:
        if self._on_message_cb is None:
            return
        incoming = Incoming(
            topic=message.topic,
            payload=bytes(message.payload),
            qos=message.qos,
            retain=bool(message.retain),
            properties=_props_dict(getattr(message, "properties", None)),
        )
        self._in_message_cb = True
        try:
            self._on_message_cb(incoming)
        finally:
            self._in_message_cb = False

    # ---- closing --------------------------------------------------------------------------

    async def disconnect(self, *, with_will: bool = False) -> None:
        """Send DISCONNECT (normal: the broker discards the will) and close; with ``with_will``,
        close without DISCONNECT, so that the broker publishes the will."""
        if self.connected and not with_will:
            self._client.disconnect()
            # paho writes the DISCONNECT via the loop's writer; give it one turn to go out.
            for _ in range(50):
                if self._fd is None:
                    break
                await asyncio.sleep(0.01)
        self._teardown()
        self.connected = False
        self._fail_pending("client disconnected")
        if self._misc_task is not None:
            self._misc_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._misc_task
            self._misc_task = None

    def _teardown(self) -> None:
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()
        fd, self._fd = self._fd, None
        if fd is not None:
            self._remove_fd(fd)
        sock: Any = self._client.socket()
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                sock.close()
