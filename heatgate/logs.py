"""Logging: structlog, JSON lines for journald, a readable console on a terminal.

Log lines never carry key material or identifiers in clear: :func:`redact` runs last before
rendering, replacing the values of sensitive keys and anything that looks like key material.

Names, one scheme (``tests/test_log_names.py`` holds every call in the tree to it):

- A logger per area, ``log = get_logger("heatgate.<area>")``: the area is one lowercase word a
  reader of the journal knows, the part of the system that speaks — ``daemon``, ``publish``,
  ``commands``, ``status``, ``sdnotify``, ``buffer``, ``modbus``, ``p1``, ``zwave``. Every line
  carries it as ``logger``.
- An event is ``"<area>.<event>"``, the event in snake case, saying what happened or what state
  was entered (``publish.connection_lost``, ``modbus.device_backing_off``, ``daemon.reloaded``),
  the same words every time so that it can be counted and alerted on. The facts go into keys,
  never into the event text: ``log.warning("publish.connection_lost", url=..., error=...)``.
- A helper that logs on behalf of its owner (the serial port keeper) takes the owner's logger and
  area, so its events read ``p1.port_lost``, ``zwave.port_lost``.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["EVENT_NAME", "LOGGER_NAME", "REDACTED", "configure", "get_logger", "redact"]

REDACTED = "[redacted]"
LOGGER_NAME = re.compile(r"^heatgate\.(?P<area>[a-z][a-z0-9]*)$")
"""A logger's name: ``heatgate.<area>``."""
EVENT_NAME = re.compile(r"^(?P<area>[a-z][a-z0-9]*)\.(?P<event>[a-z][a-z0-9]*(_[a-z0-9]+)*)$")
"""An event: ``<area>.<event>``, snake case."""

# Keys whose values are secrets or identifiers of a household or its equipment.
_SENSITIVE_KEY = re.compile(
    r"(key|secret|password|passwd|token|credential|serial|equipment_id|home_id|mac|"
    r"postcode|address|nonce|signature|private)",
    re.IGNORECASE,
)
# Keys that merely mention such words but are safe counts/paths/names.
_SAFE_KEY = re.compile(r"(_file|_path|_dir|_count|_epoch|_id_kind|^key_epochs?$|_bytes|_s)$")
# Values that look like raw key material: long hex or base64 runs, PEM blocks.
_KEYLIKE_VALUE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\b[0-9a-fA-F]{32,}\b|(?<![A-Za-z0-9+/_-])[A-Za-z0-9+/_-]{40,}={0,2}"
)


def _keylike(match: re.Match[str]) -> str:
    token = match.group(0)
    # A filesystem path is many short segments between slashes, not key material.
    looks_like_path = token.startswith("/") and "+" not in token and not token.endswith("=")
    if looks_like_path and all(len(part) < 32 for part in token.split("/")):
        return token
    return REDACTED


def _scrub(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return REDACTED
    if isinstance(value, str):
        return _KEYLIKE_VALUE.sub(_keylike, value)
    if isinstance(value, dict):
        return {k: _redact_item(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def _redact_item(key: str, value: Any) -> Any:
    if _SENSITIVE_KEY.search(key) and not _SAFE_KEY.search(key):
        return REDACTED
    return _scrub(value)


def redact(_logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """structlog processor: keep secrets and identifiers out of every log line."""
    for key in list(event_dict):
        if key in ("timestamp", "level", "logger"):
            continue
        event_dict[key] = _redact_item(key, event_dict[key])
    return event_dict


class _NamedPrintLogger(structlog.PrintLogger):
    """A PrintLogger that knows the name it was asked for, for :func:`_add_logger_name`."""

    def __init__(self, file: TextIO, name: str) -> None:
        super().__init__(file)
        self.name = name


class _NamedPrintLoggerFactory:
    def __init__(self, file: TextIO) -> None:
        self._file = file

    def __call__(self, *args: Any) -> _NamedPrintLogger:
        return _NamedPrintLogger(self._file, str(args[0]) if args else "")


def _add_logger_name(logger: Any, _method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    name = getattr(logger, "name", "")
    if name:
        event_dict.setdefault("logger", name)
    return event_dict


def configure(*, level: str = "info", stream: TextIO | None = None, json: bool | None = None) -> None:
    """Set up structlog once per process. JSON when ``stream`` is not a terminal."""
    out = stream if stream is not None else sys.stderr
    use_json = json if json is not None else not out.isatty()
    numeric = logging.getLevelName(level.upper())
    if not isinstance(numeric, int):
        raise ValueError(f"unknown log level {level!r}")
    renderer: Any = (
        structlog.processors.JSONRenderer() if use_json else structlog.dev.ConsoleRenderer(colors=out.isatty())
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            _add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=_NamedPrintLoggerFactory(out),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    """The logger of an area (``heatgate.<area>``); each of its lines carries ``logger=name``."""
    return structlog.get_logger(name)
