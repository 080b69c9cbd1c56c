"""Device profiles: declarative register maps, loaded from TOML and validated once.

A profile names a device type and lists its points; each point says where it lives
(``table``, ``address``), how to decode it (``type``, ``word_order``, ``byte_order``,
``length`` for strings, ``scale``/``offset``), what it means (``kind``, ``unit``, ``values``
for status and fault codes), when it is invalid (``invalid`` raw sentinel; a float NaN always
is), how fresh it must be (``max_age_s``; none means every poll) and whether the backend may
write it (``writable`` with ``min``/``max``). Addresses are 0-based protocol addresses.

A bad profile raises :class:`agent.typedload.ConfigError` with every problem located
(``points[4].type: …``); it never reaches a poll.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta, Struct

from heatgate.drivers.modbus.decode import Order, RegisterType, register_count
from heatgate.drivers.reading import PointKind
from heatgate.typedload import ConfigError, Issue, convert, load_toml

__all__ = ["Point", "Profile", "Signature", "Table", "Unreadable", "load_profile", "profile_path", "shipped_profiles"]

Table = Literal["holding", "input", "coil", "discrete"]
Kind = Literal["measurement", "counter", "status", "fault", "identifier"]
Address = Annotated[int, Meta(ge=0, le=65535)]
PointName = Annotated[str, Meta(pattern=r"^[a-z][a-z0-9_]{0,63}$", description="lowercase point name")]
BIT_TABLES = ("coil", "discrete")


class _Strict(Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    pass


class Point(_Strict, frozen=True, kw_only=True):
    """One value of a device: where it is, how to decode it, what it means."""

    name: PointName
    address: Address
    table: Table = "holding"
    type: RegisterType = "u16"
    word_order: Order = "big"
    byte_order: Order = "big"
    length: Annotated[int, Meta(ge=1, le=64)] | None = None
    """Registers of a ``string`` point."""
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    kind: Kind = "measurement"
    values: dict[str, str] = {}
    """Labels of raw codes for status and fault points (``"0" = "no fault"``)."""
    invalid: int | None = None
    """Raw value meaning "no reading" (e.g. -32768, 0xFFFF); gives quality ``invalid``."""
    max_age_s: Annotated[float, Meta(gt=0, le=86400)] | None = None
    """Read at most this often; none = every poll of the device."""
    writable: bool = False
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.table in BIT_TABLES and self.type != "bits":
            raise ValueError(f'type: points in the {self.table} table are single bits; use type = "bits"')
        if self.type == "string" and self.length is None:
            raise ValueError("length: a string point needs its length in registers")
        if self.type != "string" and self.length is not None:
            raise ValueError("length: only string points have a length")
        if self.scale == 0:
            raise ValueError("scale: must not be 0")
        if self.writable:
            if self.table not in ("holding", "coil"):
                raise ValueError(f"writable: only holding registers and coils can be written, not {self.table}")
            if self.type == "string":
                raise ValueError("writable: string points cannot be written")
            if self.min is None or self.max is None:
                raise ValueError("writable: a writable point needs both min and max")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min: must be <= max")
        for key in self.values:
            try:
                int(key, 0)
            except ValueError:
                raise ValueError(f"values: key {key!r} is not an integer code") from None

    @property
    def point_kind(self) -> PointKind:
        return PointKind(self.kind)

    @property
    def count(self) -> int:
        """Registers (or bits) this point occupies."""
        return 1 if self.table in BIT_TABLES else register_count(self.type, self.length)

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + self.count

    def label(self, raw: int | float | str) -> str | None:
        """The profile's text for a status or fault code, if it has one."""
        if not self.values or not isinstance(raw, int):
            return None
        for key, text in self.values.items():
            if int(key, 0) == raw:
                return text
        return None


class Unreadable(_Strict, frozen=True, kw_only=True):
    """An address range a block read must not cover (the device answers it with an exception)."""

    table: Table
    start: Address
    end: Address
    """Inclusive."""

    def __post_init__(self) -> None:
        if self.end < self.start:
            raise ValueError("end: must be >= start")


class Signature(_Strict, frozen=True, kw_only=True):
    """How ``heatgate scan`` recognises the device: a point whose raw value is ``equals``, or
    whose string starts with ``prefix``, or whose scaled value lies in ``min``..``max``."""

    point: PointName
    equals: int | None = None
    prefix: str | None = None
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        modes = (self.equals is not None) + (self.prefix is not None) + (self.min is not None or self.max is not None)
        if modes != 1:
            raise ValueError("equals: give exactly one of equals, prefix, or min and max")
        if (self.min is None) != (self.max is None):
            raise ValueError("min: give both min and max")

    def matches(self, value: float | int | str) -> bool:
        """Whether a decoded value (raw for ``equals``/``prefix``, scaled for a range) fits."""
        if self.prefix is not None:
            return isinstance(value, str) and value.startswith(self.prefix)
        if isinstance(value, str):
            return False
        if self.equals is not None:
            return value == self.equals
        assert self.min is not None and self.max is not None
        return self.min <= value <= self.max


class Profile(_Strict, frozen=True, kw_only=True):
    """A device's register map."""

    name: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
    device_type: Annotated[str, Meta(pattern=r"^[a-z0-9][a-z0-9-]{0,47}$")]
    vendor: str = ""
    model: str = ""
    description: str = ""
    max_gap_registers: Annotated[int, Meta(ge=0, le=124)] | None = None
    """Override of the planner's gap rule: never read more than this many unused registers."""
    unreadable: list[Unreadable] = []
    signature: Signature | None = None
    points: Annotated[list[Point], Meta(min_length=1)]

    def point(self, name: str) -> Point:
        for point in self.points:
            if point.name == name:
                return point
        raise KeyError(name)


def profile_path(name_or_path: str) -> Path:
    """Where a profile lives: an absolute path as is, a shipped name in ``config/profiles``."""
    if name_or_path.startswith("/"):
        return Path(name_or_path)
    if "/" in name_or_path or name_or_path.endswith(".toml") or not name_or_path:
        raise ConfigError(name_or_path, [Issue("", "give a shipped profile name or an absolute path")])
    from heatgate.config import profiles_dir

    path = profiles_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = ", ".join(shipped_profiles()) or "none"
        raise ConfigError(name_or_path, [Issue("", f"unknown profile {name_or_path!r}; shipped: {known}")])
    return path


def shipped_profiles() -> list[str]:
    """Names of the profiles shipped in ``config/profiles``."""
    from heatgate.config import profiles_dir

    return sorted(p.stem for p in profiles_dir().glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    """Load and validate a profile by shipped name (``sdm630``) or absolute path.

    Raises :class:`agent.typedload.ConfigError` listing every problem, located like
    ``points[4].type: …``, with the file as its source.
    """
    path = profile_path(name_or_path)
    profile = convert(load_toml(path), Profile, source=str(path))
    issues = _semantic_issues(profile)
    if issues:
        raise ConfigError(str(path), issues)
    return profile


def _semantic_issues(profile: Profile) -> list[Issue]:
    issues: list[Issue] = []
    names: dict[str, int] = {}
    for index, point in enumerate(profile.points):
        if point.name in names:
            issues.append(Issue(f"points[{index}].name", f"duplicate point name (also points[{names[point.name]}])"))
        names.setdefault(point.name, index)
        limit = 65536
        if point.end > limit:
            issues.append(Issue(f"points[{index}].address", f"{point.count} registers from {point.address} pass 65535"))
        for gap in profile.unreadable:
            if gap.table == point.table and point.address <= gap.end and gap.start < point.end:
                issues.append(
                    Issue(
                        f"points[{index}].address",
                        f"overlaps the unreadable range {gap.start}-{gap.end} of {gap.table}",
                    )
                )
    by_table: dict[str, list[tuple[int, Point]]] = {}
    for index, point in enumerate(profile.points):
        by_table.setdefault(point.table, []).append((index, point))
    for entries in by_table.values():
        entries.sort(key=lambda e: e[1].address)
        for (_, a), (j, b) in pairwise(entries):
            if b.address < a.end:
                where = f"{a.table} {a.address}-{a.end - 1}"
                issues.append(Issue(f"points[{j}].address", f"overlaps point {a.name!r} ({where})"))
    if profile.signature is not None and profile.signature.point not in names:
        issues.append(Issue("signature.point", f"no point named {profile.signature.point!r}"))
    return issues
