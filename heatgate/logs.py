"""Logging: structlog, JSON lines for journald, a readable console on a terminal.

Log lines never carry key material or identifiers in clear: :func:`redact` runs last before
rendering, replacing the values of sensitive keys and anything that looks like key material.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["REDACTED", "configure", "get_logger", "redact"]

REDACTED = "[redacted]"

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
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=True,
    )


def get_logger(name: str) -> Any:
    return structlog.get_logger(name)
