"""What the audit log says about the config: which keys changed, never a function of their values.

The config holds personal data (the customer's postcode in ``gateway.region``, device names).
An unkeyed hash of the file, or of any value in it, is no pseudonym: the postcode space is
small and the file's template public, so a hash is reversed by trying every candidate. The
``agent.start`` and ``agent.reload`` audit records therefore carry only *which* config keys
changed since the config this device last recorded, found by comparing keyed MACs
(HMAC-SHA256, a random key made on the device) kept in the buffer's encrypted state. Neither
the key nor the MACs ever leave the device; the key names are the config's schema
(``gateway.region``, ``sources[1]``), not its values.

Use: ``details = await config_change_details(buffer, config)`` and put ``details`` in the audit
record's details.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from typing import Any

import msgspec

from heatgate.agent.privacy.pseudonym import KeyStore

__all__ = ["STATE_KEY", "config_change_details", "config_keys", "refusal_reason", "remote_status"]

STATE_KEY = "privacy.config-audit"
_KEY_BYTES = 32
_MAX_LISTED = 24
_PATH = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{0,47}(\[\d{1,4}\])?(\.[A-Za-z_][A-Za-z0-9_-]{0,47}(\[\d{1,4}\])?){0,7}$")


def config_keys(config: Any) -> dict[str, Any]:
    """The config as ``{key path: value}``: each key of each table (``mqtt.url``), each entry of a
    list (``sources[0]``) whole, and top-level scalars as they are."""
    document = msgspec.to_builtins(config)
    flat: dict[str, Any] = {}
    for name, value in document.items():
        if isinstance(value, dict):
            for key, item in value.items():
                flat[f"{name}.{key}"] = item
        elif isinstance(value, list):
            for index, item in enumerate(value):
                flat[f"{name}[{index}]"] = item
        else:
            flat[name] = value
    return flat


def _macs(key: bytes, flat: dict[str, Any]) -> dict[str, str]:
    return {
        path: hmac.new(key, path.encode() + b"\x00" + json.dumps(value, sort_keys=True).encode(), hashlib.sha256)
        .digest()
        .hex()
        for path, value in flat.items()
    }


async def config_change_details(store: KeyStore, config: Any) -> dict[str, str | int | bool]:
    """Compare ``config`` with the one last recorded on this device, record it, and return the
    audit details: ``config_first_seen`` (nothing was recorded), ``config_keys_changed`` (how
    many key paths were added, removed or changed) and ``config_changed`` (those paths, sorted,
    comma-separated; at most 24 are named)."""
    raw = await store.get_state(STATE_KEY)
    previous: dict[str, str] | None = None
    key = b""
    if raw is not None:
        try:
            document = json.loads(raw)
            key = bytes.fromhex(document["key"])
            previous = {str(path): str(mac) for path, mac in document["macs"].items()}
            if len(key) != _KEY_BYTES:
                raise ValueError("bad key length")
        except (ValueError, KeyError, TypeError, AttributeError):
            previous = None  # unreadable: start again; the record says so
    if previous is None:
        key = os.urandom(_KEY_BYTES)
    macs = _macs(key, config_keys(config))
    await store.set_state(STATE_KEY, json.dumps({"version": 1, "key": key.hex(), "macs": macs}).encode())
    if previous is None:
        return {"config_first_seen": True, "config_keys_changed": 0, "config_changed": ""}
    changed = sorted(path for path in set(macs) | set(previous) if macs.get(path) != previous.get(path))
    listed = ", ".join(changed[:_MAX_LISTED]) + (", ..." if len(changed) > _MAX_LISTED else "")
    return {"config_first_seen": False, "config_keys_changed": len(changed), "config_changed": listed}


def refusal_reason(reason: str) -> str:
    """The audit form of a refused reload's reason ``"<file>: <path>: <message>; <path>: ..."``:
    the file and the located paths only. The messages stay on the device (log, ``heatgate
    status``): they may quote the refused values (``got str '3511 AB …'``)."""
    if reason.startswith("privacy state:"):
        return "privacy state unreadable"
    source, _, rest = reason.partition(": ")
    paths = []
    for issue in rest.split("; "):
        path = issue.partition(": ")[0]
        if _PATH.match(path) and path not in paths:
            paths.append(path)
    where = ", ".join(paths[:_MAX_LISTED]) or "the whole document"
    return f"{source}: invalid at {where}"[:500]


_RELOAD_PROBLEM = "reload refused, running on the previous settings: "


def remote_status(snapshot: dict[str, Any]) -> dict[str, Any]:
    """The ``heatgate status`` document as the remote ``status`` command answers it: a refused
    reload's reason reduced to :func:`refusal_reason` (the local socket keeps the whole text)."""
    reload = snapshot.get("reload")
    if not isinstance(reload, dict) or not reload.get("error"):
        return snapshot
    result = dict(snapshot)
    result["reload"] = {**reload, "error": refusal_reason(str(reload["error"]))}
    result["problems"] = [
        _RELOAD_PROBLEM + refusal_reason(p.removeprefix(_RELOAD_PROBLEM))
        if isinstance(p, str) and p.startswith(_RELOAD_PROBLEM)
        else p
        for p in snapshot.get("problems", [])
    ]
    return result
