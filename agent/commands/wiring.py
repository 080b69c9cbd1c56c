"""Helpers for the daemon: pinned keys from the config's key files, and an audit sink that
commits through the privacy pipeline into the buffer's security stream."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent.commands.dispatch import AuditSink
from agent.commands.keys import key_id, load_ed25519_public
from agent.payloads import AuditBody

__all__ = ["AuditPipeline", "pinned_keys", "pipeline_audit_sink"]


def pinned_keys(paths: Iterable[Path | str | None]) -> dict[str, Ed25519PublicKey]:
    """Key id -> public key for each PEM file given (None entries are skipped).
    Raises :class:`agent.commands.keys.KeyFileError`."""
    keys: dict[str, Ed25519PublicKey] = {}
    for path in paths:
        if path is not None:
            key = load_ed25519_public(Path(path))
            keys[key_id(key)] = key
    return keys


class AuditPipeline(Protocol):
    def audit(self, event: str, actor: str, outcome: str, *, reason: str | None = None,
              details: dict[str, str | int | float | bool | None] | None = None) -> Any: ...


class RecordPutter(Protocol):
    async def put(self, records: Sequence[Any]) -> None: ...


def pipeline_audit_sink(pipeline: AuditPipeline, buffer: RecordPutter) -> AuditSink:
    """``audit`` for :class:`agent.commands.dispatch.CommandProcessor`: the pipeline makes the
    security-stream record (its own ``at``), the buffer commits it; returns the record id."""

    async def sink(body: AuditBody) -> str | None:
        record = pipeline.audit(body.event, body.actor, body.outcome, reason=body.reason, details=dict(body.details))
        await buffer.put([record])
        return str(record.id)

    return sink
