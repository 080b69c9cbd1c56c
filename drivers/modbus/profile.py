"""Device profiles: declarative register maps, loaded from TOML and validated once.

A profile names a device type and lists its points; each point says where it lives
(``table``, ``address``), how to decode it (``type``, ``word_order``, ``byte_order``,
``length`` in registers or ``chars`` in characters for strings, ``bit_range``,
``scale``/``offset``), what it means (``kind``, ``unit``, ``values`` for status and fault
codes, ``flags`` for status words), when it is invalid (``invalid``: one raw sentinel or a
list; a float NaN always is), how fresh it must be (``max_age_s``; none means every poll) and
whether the backend may write it (``writable`` with ``min``/``max``, ``write_word_order``).
The profile also carries the device's read limits (``max_registers_per_read``,
``even_register_count``, ``max_gap_registers``), the ranges it refuses (``unreadable``) and
an optional ``init`` write sent once before the first poll. Addresses are 0-based protocol
addresses. docs/profiles.md documents every key.

A bad profile raises :class:`heatgate.typedload.ConfigError` with every problem located
(``points[4].type: …``); it never reaches a poll.
"""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path
from typing import Annotated, Literal

from msgspec import Meta, Struct

from heatgate.drivers.modbus.decode import BYTE_TYPES, Order, RegisterType, register_count
from heatgate.drivers.reading import PointKind
from heatgate.typedload import ConfigError, Issue, convert, load_toml

__all__ = [
    "InitWrite",
    "Point",
    "Profile",
    "Signature",
    "Table",
    "Unreadable",
    "load_profile",
    "profile_path",
    "shipped_profiles",
]

Table = Literal["holding", "input", "coil", "discrete"]
Kind = Literal["measurement", "counter", "status", "fault", "identifier"]
Address = Annotated[int, Meta(ge=0, le=65535)]
PointName = Annotated[
    str,
    Meta(
        pattern=r"^[a-z][a-z0-9_]{0,63}$",
        description="a point name of at most 64 characters: a-z, 0-9 and '_', starting with a letter",
    ),
]
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
    """Registers of a ``string`` point (two characters each). Give this or ``chars``."""
    chars: Annotated[int, Meta(ge=1, le=128)] | None = None
    """Characters of a ``string`` point, as manuals count them; occupies ``ceil(chars / 2)``
    registers and decodes to at most ``chars`` characters."""
    write_word_order: Order | None = None
    """Word order of multi-register writes, when the device writes differently than it reads
    (NIBE S-series: read low word first, write high word first). Default: ``word_order``."""
    bit_range: tuple[int, int] | None = None
    """``[first, last]`` bits (0 = least significant, inclusive) of a ``u16``/``bits`` register
    that hold this value, shifted down: ``[8, 11]`` of 0x0A50 is 0xA."""
    scale: float = 1.0
    offset: float = 0.0
    unit: str | None = None
    kind: Kind = "measurement"
    values: dict[str, str] = {}
    """Labels of raw codes for status and fault points (``"0" = "no fault"``)."""
    flags: dict[str, str] = {}
    """Labels of single bits of a status word (``"0" = "compressor on"``, bit 0 = least
    significant); the reading's text lists the bits that are set."""
    invalid: int | list[int] | None = None
    """Raw value(s) meaning "no reading" (e.g. -32768, 0xFFFF); gives quality ``invalid``."""
    max_age_s: Annotated[float, Meta(gt=0, le=86400)] | None = None
    """Read at most this often; none = every poll of the device."""
    writable: bool = False
    min: float | None = None
    max: float | None = None

    def __post_init__(self) -> None:
        if self.table in BIT_TABLES and self.type != "bits":
            raise ValueError(f'type: points in the {self.table} table are single bits; use type = "bits"')
        if self.type == "string" and (self.length is None) == (self.chars is None):
            raise ValueError("length: a string point needs its length in registers or its chars, not both")
        if self.type != "string" and (self.length is not None or self.chars is not None):
            raise ValueError("length: only string points have a length or chars")
        if self.bit_range is not None:
            first, last = self.bit_range
            if self.type not in ("u16", "bits"):
                raise ValueError("bit_range: only u16 and bits registers have a bit range")
            if not 0 <= first <= last <= 15:
                raise ValueError("bit_range: give [first, last] with 0 <= first <= last <= 15")
        if self.flags:
            if self.type not in ("u16", "u32", "bits", "u8hi", "u8lo"):
                raise ValueError("flags: only unsigned integer registers have bit flags")
            width = 16 * register_count(self.type) if self.type not in BYTE_TYPES else 8
            for key in self.flags:
                if not key.isdigit() or int(key) >= width:
                    raise ValueError(f"flags: key {key!r} is not a bit number 0..{width - 1}")
            if self.values:
                raise ValueError("flags: give values (codes) or flags (bits), not both")
        if self.scale == 0:
            raise ValueError("scale: must not be 0")
        if self.writable:
            if self.table not in ("holding", "coil"):
                raise ValueError(f"writable: only holding registers and coils can be written, not {self.table}")
            if self.type == "string":
                raise ValueError("writable: string points cannot be written")
            if self.type in BYTE_TYPES or self.bit_range is not None:
                raise ValueError("writable: part of a register cannot be written alone")
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
        if self.table in BIT_TABLES:
            return 1
        if self.chars is not None:
            return (self.chars + 1) // 2
        return register_count(self.type, self.length)

    @property
    def write_order(self) -> Order:
        return self.write_word_order or self.word_order

    def is_invalid(self, raw: int | float | str) -> bool:
        """Whether ``raw`` (the decoded register value, before bit range and scale) is one of
        the point's "no value" sentinels."""
        if self.invalid is None or isinstance(raw, str):
            return False
        sentinels = self.invalid if isinstance(self.invalid, list) else [self.invalid]
        return raw in sentinels

    @property
    def end(self) -> int:
        """One past the last address."""
        return self.address + self.count

    def label(self, raw: int | float | str) -> str | None:
        """The profile's text for a status or fault code, or the set bits of a status word."""
        if self.flags and isinstance(raw, int):
            set_bits = [
                text for key, text in sorted(self.flags.items(), key=lambda kv: int(kv[0])) if raw >> int(key) & 1
            ]
            return ", ".join(set_bits) if set_bits else "none"
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


class InitWrite(_Strict, frozen=True, kw_only=True):
    """Raw words written once to a device before its first poll (some devices must be
    unlocked, or switched to the register map the profile describes). Declared by the installer
    in the profile; logged when sent; a refusal is logged and the device is polled anyway."""

    table: Literal["holding", "coil"] = "holding"
    address: Address
    values: Annotated[list[Annotated[int, Meta(ge=0, le=65535)]], Meta(min_length=1, max_length=123)]
    note: str = ""


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

    name: Annotated[
        str,
        Meta(
            pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$",
            description="a lowercase name of at most 64 characters: a-z, 0-9, '.', '-' and '_'",
        ),
    ]
    device_type: Annotated[
        str,
        Meta(
            pattern=r"^[a-z0-9][a-z0-9-]{0,47}$", description="a device type of at most 48 characters: a-z, 0-9 and '-'"
        ),
    ]
    vendor: str = ""
    model: str = ""
    description: str = ""
    reference: str = ""
    """Where the register map comes from: document and version, or repository and commit."""
    max_gap_registers: Annotated[int, Meta(ge=0, le=124)] | None = None
    """Override of the planner's gap rule: never read more than this many unused registers."""
    max_registers_per_read: Annotated[int, Meta(ge=1, le=125)] | None = None
    """The device's largest read, in registers (Eastron meters refuse more than 80)."""
    even_register_count: bool = False
    """The device answers only reads of an even number of registers (whole 32-bit values)."""
    unreadable: list[Unreadable] = []
    init: list[InitWrite] = []
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
    limit_registers = profile.max_registers_per_read
    for index, point in enumerate(profile.points):
        if limit_registers is not None and point.table not in BIT_TABLES and point.count > limit_registers:
            issues.append(Issue(f"points[{index}].address", f"{point.count} registers exceed max_registers_per_read"))
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
    if not issues:
        from heatgate.drivers.modbus.planner import plan_profile

        try:
            plan_profile(profile)
        except ValueError as exc:
            issues.append(Issue("points", str(exc)))
    return issues
