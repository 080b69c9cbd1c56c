"""The Z-Wave JS server's WebSocket messages that heatgate uses, as msgspec types.

Pinned to :data:`SCHEMA_VERSION`: the client sends ``set_api_schema`` with it first, and the
server then speaks that schema whatever its own newest is. Only the fields heatgate reads are
declared; unknown fields are ignored, so that a newer server's additions do not break decoding.
"""

from __future__ import annotations

from typing import Any, TypeVar

import msgspec

__all__ = [
    "SCHEMA_VERSION",
    "ControllerState",
    "Event",
    "EventMessage",
    "Incoming",
    "NodeState",
    "NodeStatus",
    "NotificationArgs",
    "ResultMessage",
    "SecurityClass",
    "ServerState",
    "ValueArgs",
    "ValueMetadata",
    "ValueState",
    "VersionMessage",
    "decode_as",
    "decode_event",
    "decode_incoming",
    "encode_command",
]

SCHEMA_VERSION = 44
"""The API schema heatgate speaks; @zwave-js/server 3.10 (packaging/zwave-js) serves 0..50."""


class NodeStatus:
    """``NodeState.status`` values (zwave-js ``NodeStatus``)."""

    UNKNOWN = 0
    ASLEEP = 1
    AWAKE = 2
    DEAD = 3
    ALIVE = 4
    NAMES = {0: "unknown", 1: "asleep", 2: "awake", 3: "dead", 4: "alive"}


class SecurityClass:
    """zwave-js ``SecurityClass`` values, as they appear in ``highestSecurityClass``."""

    NONE = -1
    S2_UNAUTHENTICATED = 0
    S2_AUTHENTICATED = 1
    S2_ACCESS_CONTROL = 2
    S0_LEGACY = 7
    NAMES = {
        -1: "none",
        0: "S2_Unauthenticated",
        1: "S2_Authenticated",
        2: "S2_AccessControl",
        7: "S0_Legacy",
    }
    RANK = {-1: 0, 7: 1, 0: 2, 1: 3, 2: 4}
    """Weakest to strongest, for comparing what was granted with what was asked."""


class VersionMessage(msgspec.Struct, tag="version", tag_field="type", kw_only=True):
    """The first message on every connection."""

    homeId: int | None = None
    driverVersion: str = ""
    serverVersion: str = ""
    minSchemaVersion: int = 0
    maxSchemaVersion: int = 0


class ResultMessage(msgspec.Struct, tag="result", tag_field="type", kw_only=True):
    messageId: str
    success: bool
    result: dict[str, Any] | None = None
    errorCode: str | None = None
    message: str | None = None
    zwaveErrorCode: int | None = None
    zwaveErrorMessage: str | None = None


class EventMessage(msgspec.Struct, tag="event", tag_field="type", kw_only=True):
    event: msgspec.Raw


Incoming = VersionMessage | ResultMessage | EventMessage


class ValueMetadata(msgspec.Struct, kw_only=True):
    label: str | None = None
    unit: str | None = None
    states: dict[str, str] | None = None
    ccSpecific: dict[str, Any] | None = None


class ValueState(msgspec.Struct, kw_only=True):
    """One value of a node as ``start_listening`` lists it."""

    endpoint: int = 0
    commandClass: int
    property: str | int
    propertyKey: str | int | None = None
    propertyName: str | None = None
    propertyKeyName: str | None = None
    metadata: ValueMetadata = msgspec.field(default_factory=ValueMetadata)
    value: Any = None


class NodeStatistics(msgspec.Struct, kw_only=True):
    lastSeen: str | None = None


class NodeState(msgspec.Struct, kw_only=True):
    nodeId: int
    name: str | None = None
    status: int = NodeStatus.UNKNOWN
    ready: bool = False
    isSecure: bool | None = None
    highestSecurityClass: int | None = None
    interviewStage: str | None = None
    values: list[ValueState] = []
    statistics: NodeStatistics | None = None


class ControllerState(msgspec.Struct, kw_only=True):
    homeId: int | None = None
    ownNodeId: int | None = None


class ServerState(msgspec.Struct, kw_only=True):
    """``start_listening``'s ``result.state``."""

    controller: ControllerState
    nodes: list[NodeState] = []


class ValueArgs(msgspec.Struct, kw_only=True):
    """``args`` of a node's ``value updated`` / ``value added`` / ``value notification`` event."""

    commandClass: int
    endpoint: int = 0
    property: str | int
    propertyKey: str | int | None = None
    propertyName: str | None = None
    propertyKeyName: str | None = None
    newValue: Any = None
    value: Any = None
    """``value notification`` carries ``value`` instead of ``newValue``."""


class NotificationArgs(msgspec.Struct, kw_only=True):
    """``args`` of a Notification CC ``notification`` event."""

    type: int
    event: int
    label: str | None = None
    eventLabel: str | None = None


class Event(msgspec.Struct, kw_only=True):
    """An event's envelope; ``args`` and the rest stay raw until the event's kind is known."""

    source: str
    event: str
    nodeId: int | None = None
    endpointIndex: int | None = None
    ccId: int | None = None
    args: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    """Empty (falsy) when the event has none."""
    node: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    result: dict[str, Any] | None = None
    requested: dict[str, Any] | None = None
    dsk: str | None = None
    statistics: dict[str, Any] | None = None


_T = TypeVar("_T")

_incoming = msgspec.json.Decoder(Incoming)
_event = msgspec.json.Decoder(Event)
_encoder = msgspec.json.Encoder()


def decode_incoming(data: str | bytes) -> Incoming:
    """One server message. Raises :class:`msgspec.DecodeError` or :class:`msgspec.ValidationError`."""
    return _incoming.decode(data)


def decode_event(raw: msgspec.Raw) -> Event:
    return _event.decode(raw)


def decode_as(raw: msgspec.Raw | dict[str, Any], kind: type[_T]) -> _T:
    """``raw`` (an event's ``args``, or a dict result) as ``kind``."""
    if isinstance(raw, dict):
        return msgspec.convert(raw, kind)
    return msgspec.json.decode(raw, type=kind)


def encode_command(message_id: str, command: str, args: dict[str, Any]) -> bytes:
    return _encoder.encode({"messageId": message_id, "command": command, **args})
