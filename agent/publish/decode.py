"""The backend's side of the wire: decode and validate a message, de-duplicate records.

Importable by backend code without the rest of the agent::

    from heatgate.agent.publish.decode import Deduplicator, decode_message

    dedup = Deduplicator()
    decoded = decode_message(topic, payload, prefix="heatgate/v1")
    if decoded.valid:
        fresh = [r for r in decoded.records if dedup.first_time(r.id)]

Validation uses the msgspec types the shipped JSON Schemas are generated from
(``agent/schemas/*.json``), so a message valid here is valid against its schema. A message
that fails is returned with ``valid=False`` and the reason; it is never dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from heatgate.agent.payloads import STREAM_MESSAGES, StatePayload, schema_name

__all__ = ["Decoded", "Deduplicator", "decode_message"]

Kind = Literal["message", "state", "command", "response", "unknown"]

_decoders = {stream: msgspec.json.Decoder(kind) for stream, kind in STREAM_MESSAGES.items()}
_state_decoder = msgspec.json.Decoder(StatePayload)


class _Header(msgspec.Struct):
    schema: str | None = None
    stream: str | None = None


_header_decoder = msgspec.json.Decoder(_Header)


@dataclass(frozen=True, slots=True)
class DecodedRecord:
    id: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one MQTT message was. ``records`` is empty unless ``kind == "message"`` and valid."""

    topic: str
    kind: Kind
    valid: bool
    gateway: str | None = None
    """From the topic (absent on analytics)."""
    route: str | None = None
    stream: str | None = None
    schema: str | None = None
    error: str | None = None
    message: Any = None
    """The typed message (``ServiceMessage``...) or :class:`StatePayload`, when valid."""
    records: list[DecodedRecord] = field(default_factory=list)


# msgspec raises its DecodeError for malformed JSON, but UnicodeDecodeError for invalid UTF-8 in an
# object key or a string it decodes into a field name or str, and RecursionError for nesting
# deeper than it follows. All three mean: these bytes are not a JSON message of ours.
_NOT_JSON = (msgspec.DecodeError, UnicodeDecodeError, RecursionError)


def _not_json(exc: Exception) -> str:
    if isinstance(exc, UnicodeDecodeError):
        return "not JSON: invalid UTF-8"
    if isinstance(exc, RecursionError):
        return "not JSON we accept: nested too deeply"
    return f"not JSON: {exc}"


def _split(topic: str, prefix: str) -> tuple[str | None, str | None]:
    """(gateway, route) of a topic under ``prefix``; analytics has no gateway."""
    if not topic.startswith(prefix + "/"):
        return None, None
    rest = topic[len(prefix) + 1 :]
    if rest.startswith("analytics/"):
        return None, rest
    gateway, _, route = rest.partition("/")
    return gateway or None, route or None


def decode_message(topic: str, payload: bytes, *, prefix: str = "heatgate/v1") -> Decoded:
    """Decode and validate one message received on ``topic``. Never raises on bad input."""
    gateway, route = _split(topic, prefix)
    if route is None:
        return Decoded(topic, "unknown", False, error=f"topic is not under {prefix!r}")
    if route == "state":
        try:
            state = _state_decoder.decode(payload)
        except msgspec.ValidationError as exc:
            return Decoded(topic, "state", False, gateway, route, error=f"schema: {exc}")
        except _NOT_JSON as exc:
            return Decoded(topic, "state", False, gateway, route, error=_not_json(exc))
        if state.gateway != gateway:
            return Decoded(
                topic,
                "state",
                False,
                gateway,
                route,
                schema=state.schema,
                error=f"gateway {state.gateway!r} does not match the topic",
            )
        return Decoded(topic, "state", True, gateway, route, schema=state.schema, message=state)
    if route.startswith("cmd/"):
        kind: Kind = "response" if route == "cmd/response" else "command"
        return Decoded(topic, kind, True, gateway, route)
    stream = route.split("/", 1)[0]
    decoder = _decoders.get(stream)
    if decoder is None:
        return Decoded(topic, "unknown", False, gateway, route, error=f"no schema for route {route!r}")
    try:
        header = _header_decoder.decode(payload)
        message = decoder.decode(payload)
    except msgspec.ValidationError as exc:
        return Decoded(topic, "message", False, gateway, route, stream, error=f"schema {schema_name(stream)}: {exc}")
    except _NOT_JSON as exc:
        return Decoded(topic, "message", False, gateway, route, stream, error=_not_json(exc))
    claimed = getattr(message, "gateway", None)
    if claimed is not None and claimed != gateway:
        return Decoded(
            topic,
            "message",
            False,
            gateway,
            route,
            stream,
            header.schema,
            error=f"gateway {claimed!r} does not match the topic",
        )
    records = [DecodedRecord(r.id, msgspec.to_builtins(r.body)) for r in message.records]  # type: ignore[attr-defined]
    return Decoded(topic, "message", True, gateway, route, stream, header.schema, message=message, records=records)


class Deduplicator:
    """Remembers the last ``capacity`` record ids (bounded memory, least recently seen dropped).

    Delivery is at least once: a record re-sent after a reconnect keeps its id. Ids are
    time-ordered, so a capacity covering a few minutes of a fleet's traffic catches re-sends.
    """

    def __init__(self, capacity: int = 100_000) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.duplicates = 0

    def first_time(self, record_id: str) -> bool:
        """True the first time an id is seen (within the window), False for a duplicate."""
        if record_id in self._seen:
            self._seen.move_to_end(record_id)
            self.duplicates += 1
            return False
        self._seen[record_id] = None
        if len(self._seen) > self.capacity:
            self._seen.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._seen)
