"""The processing register as data: which purpose stream takes what, keeps it how long, sends it where.

:func:`load_policy` reads ``config/privacy.toml`` (or the installation's own file) into frozen
msgspec structures and validates it once, with every problem located
(``streams.analytics.aggregation.fault[0]: ...``), through :mod:`agent.typedload`.

Others use:

- ``Policy.retention_s() -> dict[str, float]``: on-device retention per stream (for the buffer);
- ``Policy.priority(stream) -> int``: the stream's lane (service 0 = published first);
- ``Policy.streams[name]``: a :class:`StreamPolicy` (purpose, legal basis, allow-lists, ...);
- ``Policy.takes_device_type(stream, device_type)`` and ``Policy.window_s(stream, device_type,
  consents)``: what a stream does with a device type, the register's ``[device_types]`` applied.

Deny by default for device types: a device type that the register's ``[device_types]`` does not
list is *unlisted* and gets the most restrictive treatment whatever the stream patterns say
(``"*"`` matches listed types only): only the streams whose legal basis is the contract take it
(service, telemetry: never analytics), in the stream's coarsest window, with no consent making
it finer. :func:`device_type_rules` says which rule each device type falls under.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

from heatgate.drivers.reading import PointKind
from heatgate.typedload import ConfigError, Issue, convert, load_toml

__all__ = [
    "AGGREGATIONS",
    "BODY_FIELDS",
    "STREAMS",
    "UNLISTED",
    "UNLISTED_LEGAL_BASES",
    "Aggregation",
    "Consent",
    "Policy",
    "RegionPolicy",
    "StreamPolicy",
    "WindowRule",
    "device_type_rules",
    "load_policy",
    "parse_policy",
]

STREAMS: tuple[str, ...] = ("service", "telemetry", "analytics", "security", "connectivity")
"""Every stream the agent knows, in the order the register lists them."""

UNLISTED = "unlisted"
"""The rule of a device type that the register does not list: the most restrictive treatment."""

UNLISTED_LEGAL_BASES: frozenset[str] = frozenset({"contract"})
"""The only streams an unlisted device type enters: those needed to fulfil the contract."""

LegalBasis = Literal["contract", "legal-obligation", "legitimate-interest", "consent"]
Agg = Literal["mean", "min", "max", "last", "delta", "count", "change"]
Name = Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_-]{0,47}$", description="lowercase name")]
Pattern = Annotated[str, Meta(min_length=1, max_length=64)]

# Which aggregation each stream may apply to each point kind. "change" = every change, at once.
AGGREGATIONS: dict[str, dict[str, frozenset[str]]] = {
    "service": {"fault": frozenset({"change"}), "status": frozenset({"change"})},
    "telemetry": {
        "measurement": frozenset({"mean", "min", "max", "last"}),
        "counter": frozenset({"delta", "last"}),
        "status": frozenset({"last"}),
        "fault": frozenset({"count"}),
    },
    "analytics": {
        "measurement": frozenset({"mean", "min", "max", "last"}),
        "counter": frozenset({"delta", "last"}),
        "status": frozenset({"last"}),
        "fault": frozenset({"count"}),
    },
    "security": {},
    "connectivity": {},
}

# What a measurement aggregate carries besides its value so that records merge exactly.
_MERGE_FIELDS = frozenset({"sum", "min", "max"})

# The body fields each stream's records can carry (the allow-list chooses among them).
BODY_FIELDS: dict[str, frozenset[str]] = {
    "service": frozenset({"device", "device_type", "point", "code", "text", "active", "value", "coalesced", "at"}),
    "telemetry": frozenset(
        {"device", "device_type", "point", "unit", "agg", "value", "window_start", "window_s", "samples", "quality"}
        | _MERGE_FIELDS
        | {"late"}
    ),
    "analytics": frozenset({"subject", "device_type", "region", "point", "agg", "value", "hour", "samples", "late"})
    | _MERGE_FIELDS,
    "security": frozenset({"event", "actor", "outcome", "reason", "details", "at"}),
    "connectivity": frozenset({"event", "target", "reason", "at"}),
}

# Fields a record cannot be built without (the allow-list must keep them).
_REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    "service": frozenset({"point", "code", "value", "at"}),
    "telemetry": frozenset({"point", "agg", "value", "window_start", "window_s", "samples"}),
    "analytics": frozenset({"subject", "point", "agg", "value", "hour", "samples"}),
    "security": frozenset({"event", "actor", "outcome", "at"}),
    "connectivity": frozenset({"event", "target", "at"}),
}

_ROUTE_PLACEHOLDERS: dict[str, frozenset[str]] = {
    "service": frozenset({"kind"}),
    "analytics": frozenset({"device_type"}),
}
_ROUTE_CHARS = re.compile(r"^[a-z0-9_{}-]+(/[a-z0-9_{}-]+)*$")


class _Section(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of every policy table: frozen, keyword-only, unknown keys rejected."""


class Aggregation(_Section, frozen=True, kw_only=True):
    """Per point kind, the aggregates a stream emits for each window (empty: kind not aggregated)."""

    measurement: list[Agg] = []
    counter: list[Agg] = []
    status: list[Agg] = []
    fault: list[Agg] = []

    def for_kind(self, kind: str) -> list[str]:
        value: list[str] = getattr(self, kind, [])
        return value


class WindowRule(_Section, frozen=True, kw_only=True):
    """A different window for some device types, finer when a consent is recorded."""

    device_types: Annotated[list[Pattern], Meta(min_length=1)]
    window_s: Annotated[int, Meta(ge=1, le=86400)]
    consent: Name | None = None
    consent_window_s: Annotated[int, Meta(ge=1, le=86400)] | None = None


class StreamPolicy(_Section, frozen=True, kw_only=True):
    """One purpose stream of the register."""

    purpose: Annotated[str, Meta(min_length=1)]
    legal_basis: LegalBasis
    objectable: bool = False
    """The customer may object (intake stops, the queue is destroyed)."""
    restrictable: bool = True
    """The customer may restrict it (stored, not published until lifted)."""
    needs_consent: Name | None = None
    """A consent without which the stream takes nothing."""
    carries_gateway_id: bool = False
    """Published under ``<prefix>/<gateway>/``; when false, under ``<prefix>/`` with no gateway id."""
    kinds: list[PointKind] = []
    """Point kinds that enter the stream (identifier never does)."""
    device_types: list[Pattern] = msgspec.field(default_factory=lambda: ["*"])
    exclude_device_types: list[Pattern] = []
    points: list[Pattern] = msgspec.field(default_factory=lambda: ["*"])
    exclude_points: list[Pattern] = []
    fields: list[str]
    """Allow-listed body fields; everything else is left out of the record."""
    time_granularity_s: Annotated[int, Meta(ge=1, le=86400)]
    """Timestamps are floored to this; for aggregating streams it is the window length."""
    aggregation: Aggregation = Aggregation()
    windows: list[WindowRule] = []
    precision_digits: Annotated[int, Meta(ge=0, le=9)] = 3
    retention_s: Annotated[float, Meta(gt=0, le=10 * 366 * 86400)]
    """On-device retention: older records are deleted and their keys destroyed."""
    priority: Annotated[int, Meta(ge=0, le=9)]
    route: Annotated[str, Meta(min_length=1, max_length=128)]
    """Topic below the prefix; ``{kind}`` (service) and ``{device_type}`` (analytics) are filled in."""
    recipients: str = ""
    """Who sees the stream's records (for the register; not enforced here)."""
    promises: list[Name] = []
    """The promises of ``[promises]`` this stream's rules keep."""

    def takes_device_type(self, device_type: str) -> bool:
        return any(fnmatchcase(device_type, p) for p in self.device_types) and not any(
            fnmatchcase(device_type, p) for p in self.exclude_device_types
        )

    def takes_point(self, point: str) -> bool:
        return any(fnmatchcase(point, p) for p in self.points) and not any(
            fnmatchcase(point, p) for p in self.exclude_points
        )

    def window_s(self, device_type: str, consents: frozenset[str]) -> int:
        """The window (granularity) for a listed device type, given the consents now recorded
        (:meth:`Policy.window_s` also handles unlisted ones)."""
        rule = self.window_rule(device_type)
        if rule is None:
            return self.time_granularity_s
        _index, found = rule
        if found.consent and found.consent in consents and found.consent_window_s:
            return found.consent_window_s
        return found.window_s

    def window_rule(self, device_type: str) -> tuple[int, WindowRule] | None:
        """The first window rule naming ``device_type`` (with its index), or None."""
        for index, rule in enumerate(self.windows):
            if any(fnmatchcase(device_type, p) for p in rule.device_types):
                return index, rule
        return None

    def coarsest_window_s(self) -> int:
        """The longest window this stream has for any device type (consent windows aside)."""
        return max([self.time_granularity_s, *(rule.window_s for rule in self.windows)])


class Consent(_Section, frozen=True, kw_only=True):
    description: Annotated[str, Meta(min_length=1)]
    stream: Name
    """The stream whose processing the consent changes."""


class RegionPolicy(_Section, frozen=True, kw_only=True):
    postcode_digits: Annotated[int, Meta(ge=1, le=2)] = 2
    allow_pattern: str | None = None
    """A non-postcode region passes only if it matches (fully); otherwise it becomes ``unknown``."""

    def __post_init__(self) -> None:
        if self.allow_pattern is not None:
            try:
                re.compile(self.allow_pattern)
            except re.error as exc:
                raise ValueError(f"allow_pattern: not a regular expression: {exc}") from None


class InstallerLocal(_Section, frozen=True, kw_only=True):
    purpose: str = "installer's commissioning checks"
    published: Literal[False] = False


class Policy(_Section, frozen=True, kw_only=True):
    """The whole register; build it with :func:`load_policy`."""

    version: Literal[1]
    controller: str = ""
    region: RegionPolicy = RegionPolicy()
    consents: dict[Name, Consent] = {}
    device_types: dict[Name, Annotated[str, Meta(min_length=1)]] = {}
    """Every device type the register decides on, with what it is. Any other is unlisted."""
    promises: dict[Name, Annotated[str, Meta(min_length=1)]] = {}
    """The privacy statement's promises that the streams' rules keep, by short name."""
    streams: dict[str, StreamPolicy]
    installer_local: InstallerLocal = InstallerLocal()

    def listed(self, device_type: str) -> bool:
        return device_type in self.device_types

    def takes_device_type(self, stream: str, device_type: str) -> bool:
        """Whether ``stream`` takes readings of ``device_type`` (unlisted: contract streams only)."""
        policy = self.streams[stream]
        if device_type not in self.device_types and policy.legal_basis not in UNLISTED_LEGAL_BASES:
            return False
        return policy.takes_device_type(device_type)

    def window_s(self, stream: str, device_type: str, consents: frozenset[str]) -> int:
        """The window of ``device_type`` in ``stream`` (unlisted: the stream's coarsest, always)."""
        policy = self.streams[stream]
        if device_type not in self.device_types:
            return policy.coarsest_window_s()
        return policy.window_s(device_type, consents)

    def retention_s(self) -> dict[str, float]:
        """On-device retention per stream, in seconds (the buffer enforces it)."""
        return {name: stream.retention_s for name, stream in self.streams.items()}

    def priority(self, stream: str) -> int:
        """The stream's lane; lower is published first and evicted last. KeyError if unknown."""
        return self.streams[stream].priority

    def stream(self, name: str) -> StreamPolicy:
        return self.streams[name]


def device_type_rules(policy: Policy, device_type: str) -> dict[str, str]:
    """Which rule ``device_type`` falls under in each stream that aggregates or routes readings,
    in words: ``{"telemetry": "86400 s (900 s with consent p1-15min) by streams.telemetry.windows[0]",
    "analytics": "excluded by streams.analytics.exclude_device_types", ...}``."""
    rules: dict[str, str] = {}
    listed = policy.listed(device_type)
    for name, stream in policy.streams.items():
        if not stream.kinds:
            continue
        where = f"streams.{name}"
        if not listed and stream.legal_basis not in UNLISTED_LEGAL_BASES:
            rules[name] = f"excluded: {UNLISTED} (not in [device_types]; legal basis {stream.legal_basis})"
            continue
        if not any(fnmatchcase(device_type, p) for p in stream.device_types):
            rules[name] = f"excluded: not matched by {where}.device_types"
            continue
        if any(fnmatchcase(device_type, p) for p in stream.exclude_device_types):
            rules[name] = f"excluded by {where}.exclude_device_types"
            continue
        if not listed:
            rules[name] = f"{stream.coarsest_window_s()} s, the coarsest: {UNLISTED} (not in [device_types])"
            continue
        found = stream.window_rule(device_type)
        if found is None:
            rules[name] = f"{stream.time_granularity_s} s by {where}.time_granularity_s"
            continue
        index, rule = found
        finer = f" ({rule.consent_window_s} s with consent {rule.consent})" if rule.consent else ""
        rules[name] = f"{rule.window_s} s{finer} by {where}.windows[{index}]"
    return rules


def load_policy(path: Path) -> Policy:
    """Load and validate a policy file; raise ConfigError with every problem located."""
    return parse_policy(load_toml(path), source=str(path))


def parse_policy(data: Mapping[str, Any], *, source: str = "<policy>") -> Policy:
    """Validate plain data (a parsed TOML document) into a :class:`Policy`."""
    policy = convert(dict(data), Policy, source=source)
    issues = _semantic_issues(policy)
    if issues:
        raise ConfigError(source, issues)
    return policy


def _semantic_issues(policy: Policy) -> list[Issue]:
    """Checks across entries that a type alone cannot express."""
    issues: list[Issue] = []
    for name in STREAMS:
        if name not in policy.streams:
            issues.append(Issue(f"streams.{name}", "missing required stream"))
    for name, stream in policy.streams.items():
        where = f"streams.{name}"
        if name not in STREAMS:
            issues.append(Issue(where, f"unknown stream; known: {', '.join(STREAMS)}"))
            continue
        allowed_aggs = AGGREGATIONS[name]
        for index, kind in enumerate(stream.kinds):
            if kind is PointKind.IDENTIFIER:
                issues.append(Issue(f"{where}.kinds[{index}]", "identifiers never enter a stream in clear"))
            elif kind.value not in allowed_aggs:
                issues.append(Issue(f"{where}.kinds[{index}]", f"the {name} stream cannot take {kind.value} points"))
            elif not stream.aggregation.for_kind(kind.value):
                issues.append(Issue(f"{where}.aggregation.{kind.value}", f"give the aggregation for {kind.value}"))
        for kind_name in ("measurement", "counter", "status", "fault"):
            allowed = allowed_aggs.get(kind_name, frozenset())
            for index, agg in enumerate(stream.aggregation.for_kind(kind_name)):
                if agg not in allowed:
                    choices = ", ".join(sorted(allowed)) or "none"
                    issues.append(
                        Issue(
                            f"{where}.aggregation.{kind_name}[{index}]", f"{agg!r} not allowed here; allowed: {choices}"
                        )
                    )
        known_fields = BODY_FIELDS[name]
        for index, field in enumerate(stream.fields):
            if field not in known_fields:
                known = ", ".join(sorted(known_fields))
                issues.append(Issue(f"{where}.fields[{index}]", f"unknown field {field!r}; known: {known}"))
        for field in sorted(_REQUIRED_FIELDS[name] - set(stream.fields)):
            issues.append(Issue(f"{where}.fields", f"must allow {field!r} (a record cannot be built without it)"))
        if name == "analytics" and stream.carries_gateway_id:
            issues.append(Issue(f"{where}.carries_gateway_id", "analytics is published without the gateway id"))
        if name in ("security", "connectivity") and stream.objectable:
            issues.append(
                Issue(
                    f"{where}.objectable",
                    f"the {name} stream cannot be objected to (it is the "
                    "record of what the agent did and of its connections)",
                )
            )
        if stream.legal_basis == "consent" and not stream.needs_consent:
            issues.append(Issue(f"{where}.needs_consent", "legal basis consent: name the consent"))
        if stream.needs_consent and stream.needs_consent not in policy.consents:
            issues.append(Issue(f"{where}.needs_consent", f"unknown consent {stream.needs_consent!r}"))
        for index, rule in enumerate(stream.windows):
            if rule.consent and rule.consent not in policy.consents:
                issues.append(Issue(f"{where}.windows[{index}].consent", f"unknown consent {rule.consent!r}"))
            if (rule.consent is None) != (rule.consent_window_s is None):
                issues.append(Issue(f"{where}.windows[{index}]", "give consent and consent_window_s together"))
        issues.extend(_route_issues(name, stream.route, f"{where}.route"))
        for index, promise in enumerate(stream.promises):
            if promise not in policy.promises:
                issues.append(Issue(f"{where}.promises[{index}]", f"unknown promise {promise!r}; see [promises]"))
    for name, stream in policy.streams.items():
        patterns = [("device_types", stream.device_types), ("exclude_device_types", stream.exclude_device_types)]
        patterns += [(f"windows[{i}].device_types", rule.device_types) for i, rule in enumerate(stream.windows)]
        for field_name, values in patterns:
            for index, pattern in enumerate(values):
                if not any(ch in pattern for ch in "*?[") and pattern not in policy.device_types:
                    issues.append(
                        Issue(
                            f"streams.{name}.{field_name}[{index}]",
                            f"device type {pattern!r} is not in [device_types] (list it, or it is treated as unlisted)",
                        )
                    )
    for name, consent in policy.consents.items():
        if consent.stream not in STREAMS:
            issues.append(Issue(f"consents.{name}.stream", f"unknown stream {consent.stream!r}"))
    return issues


def _route_issues(stream: str, route: str, where: str) -> list[Issue]:
    if not _ROUTE_CHARS.match(route):
        return [Issue(where, f"a topic below the prefix: lowercase segments joined by '/', got {route!r}")]
    placeholders = set(re.findall(r"\{([^{}]*)\}", route))
    allowed = _ROUTE_PLACEHOLDERS.get(stream, frozenset())
    bad = placeholders - allowed
    if bad:
        choices = ", ".join(f"{{{p}}}" for p in sorted(allowed)) or "none"
        return [Issue(where, f"unknown placeholder(s) {', '.join(sorted(bad))}; allowed: {choices}")]
    try:
        route.format(**{p: "x" for p in placeholders})
    except (ValueError, IndexError, KeyError) as exc:
        return [Issue(where, f"bad template: {exc}")]
    return []


def to_builtins(policy: Policy) -> dict[str, Any]:
    """Plain data form (for ``--json`` and the export)."""
    result = msgspec.to_builtins(policy)
    assert isinstance(result, dict)
    return result
