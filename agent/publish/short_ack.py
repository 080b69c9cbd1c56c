"""paho's client with a plain PUBACK read without building new objects for it.

A broker answers a QoS 1 message with a PUBACK: the message id and, in MQTT 5, a reason code and
properties, both left out when they would be Success and none (§3.4.2.1). Mosquitto sends the
reason code (0x00, or 0x10 "no matching subscribers") and a property length of 0. paho decodes
every PUBACK into a new :class:`~paho.mqtt.reasoncodes.ReasonCode` (which copies its table of
names) and a new :class:`~paho.mqtt.properties.Properties`: ≈ 19 µs of CPU per message on a
desktop core, plus the garbage it leaves. For an answer without properties,
:class:`ShortAckClient` hands paho's own ``_do_on_publish`` a reason code made once per code and
one empty property set; answers with properties, codes paho does not know and malformed ones go
through paho's reading unchanged, as does all of paho's bookkeeping (the message leaves its
in-flight set, the next queued one is sent). The drain's CPU per message drops by a quarter to a third
(docs/benchmarks.md).

The override uses paho's private names. :data:`SHORT_ACK_READY` says whether the installed paho
has its methods; where it does not, the plain client is used (slower, the same behaviour), and
``tests/test_publish_short_ack.py`` fails, so that an upgrade that changes them is seen. That
test also checks, for every kind of answer, that both clients report the same.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Final

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

__all__ = ["SHORT_ACK_READY", "ShortAckClient", "client_class"]

SHORT_ACK_READY: Final = all(
    callable(getattr(mqtt.Client, name, None)) for name in ("_handle_pubackcomp", "_do_on_publish")
)
"""The installed paho reads PUBACK in ``_handle_pubackcomp`` and reports it through
``_do_on_publish``, as the paho 2.x this is written against."""

_PACKET_TYPES: Final = {"PUBACK": PacketTypes.PUBACK, "PUBCOMP": PacketTypes.PUBCOMP}
_NO_PROPERTIES: Final = {cmd: Properties(packet_type) for cmd, packet_type in _PACKET_TYPES.items()}


@cache
def _reason(cmd: str, code: int) -> ReasonCode | None:
    """The reason code ``code`` of a ``cmd`` packet, made once (None: not one paho knows for it)."""
    try:
        return ReasonCode(_PACKET_TYPES[cmd], identifier=code)
    except (KeyError, ValueError):
        return None


class ShortAckClient(mqtt.Client):
    """:class:`paho.mqtt.client.Client`; a PUBACK (or PUBCOMP) without properties is reported with
    a shared reason code and empty properties instead of new ones."""

    def _handle_pubackcomp(self, cmd: Any) -> mqtt.MQTTErrorCode:
        reason = self._plain_reason(cmd, self._in_packet["packet"])
        if reason is None:
            return super()._handle_pubackcomp(cmd)  # properties, a reason paho does not know, or malformed
        mid = int.from_bytes(self._in_packet["packet"][:2], "big")
        with self._out_message_mutex:
            if mid in self._out_messages:
                return self._do_on_publish(mid, reason, _NO_PROPERTIES[cmd])
        return mqtt.MQTTErrorCode.MQTT_ERR_SUCCESS

    def _plain_reason(self, cmd: str, packet: bytes | bytearray) -> ReasonCode | None:
        """The reason of an answer without properties: the message id, then (MQTT 5 only) the
        reason code, then a property length of 0, each of the last two left out when it would
        be 0 (MQTT 5 §3.4.2.1). None for anything else."""
        size = len(packet)
        if size == 2:
            return _reason(cmd, 0)
        if self._protocol == mqtt.MQTTv5 and (size == 3 or (size == 4 and packet[3] == 0)):
            return _reason(cmd, packet[2])
        return None


def client_class() -> type[mqtt.Client]:
    """The client class to use: :class:`ShortAckClient` where the installed paho allows it."""
    return ShortAckClient if SHORT_ACK_READY else mqtt.Client
