"""What the backend receives: record bodies per stream, and the message that carries them.

These msgspec types are the wire contract. The JSON Schemas shipped in ``agent/schemas/`` are
generated from them (``python -m heatgate.agent.schemas``), and ``heatgate tail`` validates against them.

A buffered record's plaintext payload is the JSON of one *body*. The publisher packs several
records of one stream into one :class:`Message`, each with its own unique, stable ``id``.
Times are UTC, ISO 8601 with a ``Z``.

Aggregates merge. Every telemetry and analytics record carries its sample count (``samples``)
and, for measurements, the whole summary of its window (``sum``, ``min``, ``max``), so that two
records of the same subject, point and window (e.g. before and after a restart) combine
exactly: ``samples`` and ``sum`` add, ``mean = sum / samples``, ``min`` of the mins, ``max`` of
the maxes; ``delta`` and ``count`` add; ``last`` is the value of the record with the greater
id (ids are time-ordered). docs/privacy.md has the recipe.

Windows are published once by a running agent: a reading that comes after its window was
published is aggregated into the point's next window and counted there in ``late``. Records of
one window from two runs of the agent (before and after a restart) merge as above.

The service stream states the current state of each point. A fault point's state is given by
its latest record (by id): ``active`` -> that code is the point's fault; not ``active`` -> the
point has no fault. A status point's state is the ``value`` of its latest record. Records may
repeat a state the backend already has (after a restart, or when a full disk made the agent
coalesce); ``coalesced`` counts the changes folded into a record. A source or device that stops
answering for longer than ``[gateway] unavailable_after_s`` is a status record of the point
``availability`` (``unavailable``, then ``available`` when it answers again).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta, Struct

SCHEMA_VERSION = 1

__all__ = [
    "SCHEMA_VERSION",
    "AnalyticsBody",
    "AuditBody",
    "ConnectivityBody",
    "FaultBody",
    "Message",
    "RecordEnvelope",
    "StatePayload",
    "StatusBody",
    "TelemetryBody",
]


class _Body(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True, omit_defaults=True):
    pass


Coalesced = Annotated[
    int,
    Meta(
        ge=0,
        description="Changes of this point the agent saw and folded into this record instead of "
        "publishing each (a full disk: the latest state is kept, history is coalesced). The "
        "point's records plus their coalesced counts = the changes the agent saw. Absent: 0.",
    ),
]
Late = Annotated[
    int,
    Meta(
        ge=0,
        description="Readings in this window whose own window had already been published (a "
        "source whose clock lags by more than the grace period). Absent: 0. Merge: add.",
    ),
]


class FaultBody(_Body, tag="fault", frozen=True, kw_only=True):
    """Service stream: a fault code appeared (``active``) or cleared on a device.

    The point's state is its latest record (by id): active -> ``code`` is its fault, else no
    fault. A code that changes is a clear of the old one and a raise of the new one. After a
    restart the agent publishes only what changed while it was stopped (a clear for a fault
    gone, a raise for a new one); a device that does not answer clears nothing."""

    device: str
    device_type: str
    point: str
    code: int | str
    text: str | None = None
    active: bool = True
    coalesced: Coalesced = 0
    at: str
    """When the source saw it (UTC, ISO 8601)."""


class StatusBody(_Body, tag="status", frozen=True, kw_only=True):
    """Service stream: a status point changed (its state: the latest record's ``value``).

    The point ``availability`` is the agent's own: ``unavailable`` when a source (``device`` =
    the source's name, ``device_type`` = its type, e.g. ``p1``) or a device stopped answering
    for longer than ``[gateway] unavailable_after_s``, ``available`` when it answers again;
    ``text`` says what the agent saw (``port lost``, ``no answer``...)."""

    device: str
    device_type: str
    point: str
    value: int | float | str | None
    text: str | None = None
    coalesced: Coalesced = 0
    at: str


Samples = Annotated[
    int,
    Meta(
        ge=0,
        description="Good readings aggregated into this record (fault count: occurrences). Merge: add.",
    ),
]
Sum = Annotated[
    float | int | None,
    Meta(description="Measurements: sum of the window's good readings. Merge: add; mean = sum / samples."),
]
Min = Annotated[float | int | None, Meta(description="Measurements: the window's smallest reading. Merge: min.")]
Max = Annotated[float | int | None, Meta(description="Measurements: the window's largest reading. Merge: max.")]


class TelemetryBody(_Body, tag="telemetry", frozen=True, kw_only=True):
    """Telemetry stream: one point aggregated over one window for the customer's monitoring.

    Merging two records of one device, point, agg and window: ``samples`` add; ``delta`` and
    ``count`` values add; a measurement's ``sum``, ``min``, ``max`` merge by add, min, max and its
    mean is ``sum / samples``; ``last``: the record with the greater id."""

    device: str
    device_type: str
    point: str
    unit: str | None = None
    agg: Literal["mean", "min", "max", "last", "delta", "count"]
    value: float | int | None
    window_start: str
    """Start of the window (UTC). Windows of a day follow the gateway's time zone."""
    window_s: int
    """Length of the window in seconds: 23 or 25 hours on the days the clocks change."""
    samples: Samples
    sum: Sum = None
    min: Min = None
    max: Max = None
    late: Late = 0
    quality: Literal["ok", "partial", "bad"] = "ok"


class AnalyticsBody(_Body, tag="analytics", frozen=True, kw_only=True):
    """Analytics stream: minimal, pseudonymised, coarse. No gateway id, no device name.

    Merging two records of one subject, point, agg and hour: as telemetry (``samples`` add,
    ``mean = sum / samples``, ``min``/``max`` of the two, ``delta``/``count`` add)."""

    subject: str
    """Keyed pseudonym of the device within the analytics domain and the current epoch."""
    device_type: str
    region: str
    point: str
    agg: Literal["mean", "min", "max", "last", "delta", "count"]
    value: float | int | str | None
    hour: str
    """Start of the hour (or coarser window) the value covers."""
    samples: Samples
    sum: Sum = None
    min: Min = None
    max: Max = None
    late: Late = 0


class AuditBody(_Body, tag="audit", frozen=True, kw_only=True):
    """Security stream: an auditable event (command, consent change, key rotation...)."""

    event: str
    actor: str
    """``local-cli``, ``remote:<key id>``, ``agent``."""
    outcome: Literal["accepted", "refused", "done", "failed", "info", "ok"]
    reason: str | None = None
    details: dict[str, str | int | float | bool | None] = {}
    at: str


class ConnectivityBody(_Body, tag="connectivity", frozen=True, kw_only=True):
    """Connectivity stream: connection metadata (kept 14 days)."""

    event: Literal["connected", "disconnected", "connect_failed", "source_up", "source_down"]
    target: str
    reason: str | None = None
    at: str


Body = FaultBody | StatusBody | TelemetryBody | AnalyticsBody | AuditBody | ConnectivityBody


class RecordEnvelope(Struct, frozen=True, kw_only=True):
    id: str
    """Unique, time-ordered record id; the same on every re-send (de-duplicate by it)."""
    body: Body


class Message(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One MQTT message: several records of one stream."""

    schema: str
    """``heatgate.<stream>/<version>``."""
    stream: Literal["service", "telemetry", "analytics", "security", "connectivity"]
    gateway: str | None = None
    """The gateway id; absent on the analytics stream."""
    sent_at: str
    records: list[RecordEnvelope]


class StatePayload(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Retained ``<prefix>/<gateway>/state``: birth, LWT and clean-shutdown message.

    Every field is encoded, defaults included, so that ``schema`` is always on the wire."""

    schema: str = f"heatgate.state/{SCHEMA_VERSION}"
    state: Literal["online", "offline"]
    gateway: str
    version: str | None = None
    at: str | None = None
    health: dict[str, str | int | float | bool | None] = {}


body_encoder = msgspec.json.Encoder()
body_decoder: msgspec.json.Decoder[Body] = msgspec.json.Decoder(Body)


# ---- Per-stream message types (the JSON Schemas) and the publisher's encoding types -------------
# Added by the publisher (issue 5). Each stream has its own Message type whose records may carry
# only that stream's bodies; the analytics message has no ``gateway`` field at all (unknown fields
# are refused), so a payload that names the gateway fails its schema.

RecordId = Annotated[str, msgspec.Meta(pattern=r"^[0-9A-HJKMNP-TV-Z]{26}$", description="record id (ULID)")]
UtcTime = Annotated[
    str, msgspec.Meta(pattern=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$", description="UTC, ISO 8601, Z")
]

STREAMS: tuple[str, ...] = ("service", "telemetry", "analytics", "security", "connectivity")
"""The published streams; anything else (e.g. installer-local data) never leaves the device."""

STREAM_BODIES: dict[str, tuple[type[Struct], ...]] = {
    "service": (FaultBody, StatusBody),
    "telemetry": (TelemetryBody,),
    "analytics": (AnalyticsBody,),
    "security": (AuditBody,),
    "connectivity": (ConnectivityBody,),
}


def schema_name(stream: str) -> str:
    """The ``schema`` field of a stream's messages: ``heatgate.<stream>/<version>``."""
    return f"heatgate.{stream}/{SCHEMA_VERSION}"


def _stream_types(stream: str) -> tuple[type[Struct], type[Struct]]:
    title = stream.capitalize()
    bodies = STREAM_BODIES[stream]
    body_type: object = bodies[0] if len(bodies) == 1 else bodies[0] | bodies[1]
    record = msgspec.defstruct(
        f"{title}Record",
        [("id", RecordId), ("body", body_type)],
        frozen=True,
        kw_only=True,
        forbid_unknown_fields=True,
        module=__name__,
    )
    fields: list[tuple[str, object] | tuple[str, object, object]] = [
        ("schema", Literal[schema_name(stream)]),
        ("stream", Literal[stream]),
    ]
    if stream != "analytics":
        fields.append(("gateway", str))
    fields += [("sent_at", UtcTime), ("records", Annotated[list[record], msgspec.Meta(min_length=1)])]  # type: ignore[valid-type]
    message = msgspec.defstruct(
        f"{title}Message",
        fields,
        frozen=True,
        kw_only=True,
        forbid_unknown_fields=True,
        module=__name__,
    )
    return record, message


STREAM_MESSAGES: dict[str, type[Struct]] = {stream: _stream_types(stream)[1] for stream in STREAMS}
"""Stream name -> its Message type (``ServiceMessage``, ``AnalyticsMessage``...)."""


class RawRecord(Struct, frozen=True, kw_only=True, gc=False):
    """Encoding-side envelope: the buffered body bytes go out as they are, never re-decoded."""

    id: str
    body: msgspec.Raw


class RawMessage(Struct, frozen=True, kw_only=True, omit_defaults=True, gc=False):
    """Encoding-side :class:`Message`; encodes to the same JSON."""

    schema: str
    stream: str
    gateway: str | None = None
    sent_at: str
    records: list[RawRecord]
