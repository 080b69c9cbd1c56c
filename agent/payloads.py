"""What the backend receives: record bodies per stream, and the message that carries them.

These msgspec types are the wire contract. The JSON Schemas shipped in ``agent/schemas/`` are
generated from them (``python -m agent.schemas``), and ``heatgate tail`` validates against them.

A buffered record's plaintext payload is the JSON of one *body*. The publisher packs several
records of one stream into one :class:`Message`, each with its own unique, stable ``id``.
Times are UTC, ISO 8601 with a ``Z``.
"""

from __future__ import annotations

from typing import Literal

import msgspec
from msgspec import Struct

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


class FaultBody(_Body, tag="fault", frozen=True, kw_only=True):
    """Service stream: a fault code appeared (``active``) or cleared on a device."""

    device: str
    device_type: str
    point: str
    code: int | str
    text: str | None = None
    active: bool = True
    at: str
    """When the source saw it (UTC, ISO 8601)."""


class StatusBody(_Body, tag="status", frozen=True, kw_only=True):
    """Service stream: a status point changed."""

    device: str
    device_type: str
    point: str
    value: int | float | str | None
    text: str | None = None
    at: str


class TelemetryBody(_Body, tag="telemetry", frozen=True, kw_only=True):
    """Telemetry stream: one point aggregated over one window for the customer's monitoring."""

    device: str
    device_type: str
    point: str
    unit: str | None = None
    agg: Literal["mean", "min", "max", "last", "delta"]
    value: float | int | None
    window_start: str
    window_s: int
    samples: int
    quality: Literal["ok", "partial", "bad"] = "ok"


class AnalyticsBody(_Body, tag="analytics", frozen=True, kw_only=True):
    """Analytics stream: minimal, pseudonymised, coarse. No gateway id, no device name."""

    subject: str
    """Keyed pseudonym of the device within the analytics domain and the current epoch."""
    device_type: str
    region: str
    point: str
    agg: Literal["mean", "min", "max", "last", "delta", "count"]
    value: float | int | str | None
    hour: str
    """Start of the hour (or coarser window) the value covers."""


class AuditBody(_Body, tag="audit", frozen=True, kw_only=True):
    """Security stream: an auditable event (command, consent change, key rotation...)."""

    event: str
    actor: str
    """``local-cli``, ``remote:<key id>``, ``agent``."""
    outcome: Literal["accepted", "refused", "done", "failed", "info"]
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


class StatePayload(Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Retained ``<prefix>/<gateway>/state``: birth, LWT and clean-shutdown message."""

    schema: str = f"heatgate.state/{SCHEMA_VERSION}"
    state: Literal["online", "offline"]
    gateway: str
    version: str | None = None
    at: str | None = None
    health: dict[str, str | int | float | bool | None] = {}


body_encoder = msgspec.json.Encoder()
body_decoder: msgspec.json.Decoder[Body] = msgspec.json.Decoder(Body)
