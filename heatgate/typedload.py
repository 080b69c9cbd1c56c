"""Load TOML into frozen msgspec structures, reporting *every* problem with its location.

msgspec stops at the first error it meets. An installer fixing a config file on a gateway
wants all of them at once, each with a path such as ``sources[1].devices[0].unit_id``.
:func:`convert` therefore walks the data against the target type first, collecting issues,
and only hands the data to :func:`msgspec.convert` once the walk found none.

The same loader serves the agent config, the privacy policy and the device profiles.
"""

from __future__ import annotations

import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from heatgate.errors import HeatgateError

T = TypeVar("T")

__all__ = ["ABSOLUTE_PATH", "ConfigError", "Issue", "convert", "load_toml", "load_typed"]

UNDESCRIBED_PATTERN = "text of the allowed form (see the example configuration)"
"""Said of a value that fails a ``Meta(pattern=…)`` without a description; every pattern of a
settings type should carry one (``Meta(description=…)`` reads after "expected …")."""

# Marker carried in ``msgspec.Meta(extra=...)`` for strings that must be absolute paths.
ABSOLUTE_PATH = msgspec.Meta(extra={"absolute_path": True}, description="an absolute filesystem path")


@dataclass(frozen=True, slots=True)
class Issue:
    """One located problem: ``path`` like ``sources[1].port``; empty for the whole document."""

    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(HeatgateError):
    """A document failed to load; carries the file name and every issue found."""

    def __init__(self, source: str, issues: list[Issue]) -> None:
        self.source = source
        self.issues = list(issues)
        super().__init__(self.render())

    def render(self) -> str:
        lines = [f"{self.source}: {len(self.issues)} problem(s)"]
        lines.extend(f"{self.source}: {issue}" for issue in self.issues)
        return "\n".join(lines)


def load_toml(path: Path) -> dict[str, Any]:
    """Read a TOML file; a missing, unreadable or malformed file is a located ConfigError."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(str(path), [Issue("", "file not found")]) from None
    except IsADirectoryError:
        raise ConfigError(str(path), [Issue("", "is a directory, expected a TOML file")]) from None
    except PermissionError:
        raise ConfigError(str(path), [Issue("", "permission denied")]) from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), [Issue("", f"not UTF-8 text: {exc.reason}")]) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(str(path), [Issue("", f"not valid TOML: {exc}")]) from None


def load_typed(path: Path, target: type[T]) -> T:
    """Read ``path`` as TOML and convert it to ``target`` (all issues reported at once)."""
    return convert(load_toml(path), target, source=str(path))


def convert(data: Any, target: type[T], *, source: str = "<data>") -> T:
    """Convert plain data to ``target``; raise ConfigError listing every located issue."""
    issues: list[Issue] = []
    _walk(data, target, "", issues)
    if issues:
        raise ConfigError(source, issues)
    try:
        return msgspec.convert(data, target, strict=False)
    except msgspec.ValidationError as exc:  # a cross-field check in __post_init__
        raise ConfigError(source, [_issue_from_msgspec("", exc)]) from None


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _issue_from_msgspec(path: str, exc: msgspec.ValidationError) -> Issue:
    text = str(exc)
    sub = ""
    if " - at `$" in text:
        text, _, where = text.partition(" - at `$")
        sub = where.rstrip("`")
    location = path + sub if sub.startswith("[") else (_join(path, sub.lstrip(".")) if sub else path)
    text = text.replace("Expected", "expected", 1)
    if "matching regex" in text:  # a pattern met outside a leaf walk: never show the expression
        text = text.split("matching regex", 1)[0].rstrip() + " " + UNDESCRIBED_PATTERN
    return Issue(location, text)


def _leaf_issue(path: str, value: Any, base: Any, metas: list[msgspec.Meta], exc: msgspec.ValidationError) -> Issue:
    """A leaf's problem in the installer's words: the allowed values of an enum, the description
    of a pattern (never the regular expression itself)."""
    if typing.get_origin(base) is typing.Literal:
        allowed = ", ".join(repr(choice) for choice in typing.get_args(base))
        return Issue(path, f"expected one of {allowed}, got {value!r}")
    patterned = [meta for meta in metas if meta.pattern is not None]
    if patterned and "matching regex" in str(exc):
        described = [meta.description for meta in patterned if meta.description]
        return Issue(path, f"expected {described[0] if described else UNDESCRIBED_PATTERN}, got {value!r}")
    return _issue_from_msgspec(path, exc)


def _is_struct(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, msgspec.Struct)


def _strip_annotated(tp: Any) -> tuple[Any, list[msgspec.Meta]]:
    metas: list[msgspec.Meta] = []
    while typing.get_origin(tp) is typing.Annotated:
        args = typing.get_args(tp)
        metas.extend(a for a in args[1:] if isinstance(a, msgspec.Meta))
        tp = args[0]
    return tp, metas


def _walk(value: Any, tp: Any, path: str, issues: list[Issue]) -> None:
    base, metas = _strip_annotated(tp)
    origin = typing.get_origin(base)

    if _is_struct(base):
        _walk_struct(value, base, path, issues)
        return
    if origin in (typing.Union, types.UnionType):
        _walk_union(value, base, path, issues)
        return
    if origin in (list, tuple, frozenset, set) and not isinstance(value, list | tuple):
        issues.append(Issue(path, f"expected an array, got {_describe(value)}"))
        return
    if origin in (list, frozenset, set):
        (item_tp,) = typing.get_args(base)
        for index, item in enumerate(value):
            _walk(item, item_tp, f"{path}[{index}]", issues)
        return
    if origin is tuple:
        args = typing.get_args(base)
        item_tp = args[0] if len(args) == 2 and args[1] is Ellipsis else None
        if item_tp is not None:
            for index, item in enumerate(value):
                _walk(item, item_tp, f"{path}[{index}]", issues)
            return
    if origin is dict:
        if not isinstance(value, Mapping):
            issues.append(Issue(path, f"expected a table, got {_describe(value)}"))
            return
        key_tp, val_tp = typing.get_args(base)
        for key, item in value.items():
            try:
                msgspec.convert(key, key_tp, strict=False)
            except msgspec.ValidationError as exc:
                issues.append(Issue(_join(path, str(key)), f"bad key: {exc}"))
                continue
            _walk(item, val_tp, _join(path, str(key)), issues)
        return
    # A leaf: let msgspec judge it, including Meta constraints on the annotation.
    try:
        msgspec.convert(value, tp, strict=False)
    except msgspec.ValidationError as exc:
        issues.append(_leaf_issue(path, value, base, metas, exc))
        return
    for meta in metas:
        extra = meta.extra or {}
        if extra.get("absolute_path") and isinstance(value, str) and not value.startswith("/"):
            issues.append(Issue(path, f"must be an absolute path, got {value!r}"))


def _walk_struct(value: Any, struct: type[msgspec.Struct], path: str, issues: list[Issue]) -> None:
    if not isinstance(value, Mapping):
        issues.append(Issue(path, f"expected a table, got {_describe(value)}"))
        return
    config = struct.__struct_config__
    fields = msgspec.structs.fields(struct)
    by_name = {f.encode_name: f for f in fields}
    tag_field = config.tag_field
    bad_keys: set[str] = set()
    for key in value:
        if key == tag_field:
            continue
        if key not in by_name and config.forbid_unknown_fields:
            hint = _close_match(str(key), list(by_name))
            issues.append(Issue(_join(path, str(key)), "unknown key" + hint))
            bad_keys.add(str(key))
    missing_required = False
    for field in fields:
        if field.encode_name not in value:
            if field.required:
                issues.append(Issue(_join(path, field.encode_name), "missing required key"))
                missing_required = True
            continue
        before = len(issues)
        _walk(value[field.encode_name], field.type, _join(path, field.encode_name), issues)
        if len(issues) != before:
            bad_keys.add(field.encode_name)
    if missing_required or any(by_name[k].required for k in bad_keys if k in by_name):
        return
    # Run the struct's own cross-field checks (__post_init__) on what is valid, so that they
    # are reported together with the field errors rather than after the next attempt.
    valid = {k: v for k, v in value.items() if k not in bad_keys}
    try:
        msgspec.convert(valid, struct, strict=False)
    except msgspec.ValidationError as exc:
        issue = _issue_from_msgspec(path, exc)
        field_name, sep, rest = issue.message.partition(": ")
        if sep and issue.path == path and field_name in by_name:
            issue = Issue(_join(path, field_name), rest)
        issues.append(issue)


def _walk_union(value: Any, union: Any, path: str, issues: list[Issue]) -> None:
    members = [m for m in typing.get_args(union) if m is not type(None)]
    structs = [m for m in members if _is_struct(m)]
    if structs and len(structs) == len(members) and len(structs) > 1:
        tag_field = structs[0].__struct_config__.tag_field
        tags = {m.__struct_config__.tag: m for m in structs}
        if not isinstance(value, Mapping):
            issues.append(Issue(path, f"expected a table, got {_describe(value)}"))
            return
        if tag_field not in value:
            issues.append(Issue(_join(path, str(tag_field)), "missing required key"))
            return
        tag = value[tag_field]
        chosen = tags.get(tag) if isinstance(tag, str | int) else None
        if chosen is None:
            allowed = ", ".join(repr(t) for t in sorted(str(t) for t in tags))
            issues.append(Issue(_join(path, str(tag_field)), f"expected one of {allowed}, got {value[tag_field]!r}"))
            return
        _walk_struct(value, chosen, path, issues)
        return
    if len(members) == 1:
        _walk(value, members[0], path, issues)
        return
    try:
        msgspec.convert(value, union, strict=False)
    except msgspec.ValidationError as exc:
        issues.append(_issue_from_msgspec(path, exc))


def _describe(value: Any) -> str:
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "an array"
    return f"{type(value).__name__} {value!r}"


def _close_match(key: str, known: list[str]) -> str:
    import difflib

    match = difflib.get_close_matches(key, known, n=1, cutoff=0.7)
    if match:
        return f" (did you mean {match[0]!r}?)"
    return f" (known keys: {', '.join(sorted(known))})" if known else ""
