"""The data-subject rights, each as one call: state change + purge + audit record together.

Used alike by ``heatgate privacy ...`` (actor ``local-cli``) and by the signed remote commands
(actor ``remote:<key id>``). Every call commits its audit record(s) to ``buffer`` before it
returns and returns them (do not put them again). A request the register does not allow (an
objection to a stream that is not objectable, an unknown consent) is refused: the refusal is
audited too, then :class:`RightsRefused` is raised carrying the reason and that record.

- :func:`apply_objection` / :func:`apply_withdraw_objection`: intake of the stream stops at once
  (the pipeline drops its open windows), its queued records are deleted and their keys
  destroyed (``Buffer.purge_stream``); withdrawing resumes intake.
- :func:`apply_restriction` / :func:`apply_lift`: the stream is stored but not published
  (the publisher excludes ``state.restricted_streams()``).
- :func:`apply_consent` / :func:`apply_withdraw_consent`: e.g. ``p1-15min``.
- :func:`apply_erase`: crypto-shredding of one stream or of everything (then also new
  pseudonym keys); the audit record of the erasure names the stream and the count only.
- :func:`export_household`: everything stored, decrypted, with the register, as JSON-able data.
"""

from __future__ import annotations

import json
import time
from typing import Any, Protocol

import msgspec

from heatgate.agent.payloads import body_decoder
from heatgate.agent.privacy.errors import RightsRefused
from heatgate.agent.privacy.pipeline import Pipeline, iso_utc
from heatgate.agent.privacy.policy import STREAMS, Policy, to_builtins
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.state import Change, PrivacyState
from heatgate.buffer.api import NewRecord, StoredRecord

__all__ = [
    "RightsBuffer",
    "RightsRefused",
    "apply_consent",
    "apply_erase",
    "apply_lift",
    "apply_objection",
    "apply_restriction",
    "apply_withdraw_consent",
    "apply_withdraw_objection",
    "export_household",
    "register_view",
]


class RightsBuffer(Protocol):
    """What the rights need of the buffer (``buffer.adapter.AsyncBuffer`` has it all)."""

    async def put(self, records: Any) -> None: ...

    async def purge_stream(self, stream: str) -> int: ...

    async def erase_all(self) -> int: ...

    async def get_state(self, key: str) -> bytes | None: ...

    async def set_state(self, key: str, value: bytes | None) -> None: ...


async def _refuse(
    buffer: RightsBuffer, pipeline: Pipeline, event: str, actor: str, reason: str, subject: str
) -> RightsRefused:
    record = pipeline.audit(event, actor, "refused", reason=reason, details={"subject": subject})
    await buffer.put([record])
    return RightsRefused(reason, record)


async def _check_stream(buffer: RightsBuffer, pipeline: Pipeline, event: str, actor: str, stream: str) -> None:
    if stream not in pipeline.policy.streams:
        raise await _refuse(buffer, pipeline, event, actor, f"unknown stream; known: {', '.join(STREAMS)}", "?")


async def _done(
    buffer: RightsBuffer, pipeline: Pipeline, change: Change, **details: str | int | bool
) -> list[NewRecord]:
    record = pipeline.audit(
        change.event, change.actor, "done", details={"subject": change.subject, "changed": change.changed, **details}
    )
    await buffer.put([record])
    return [record]


async def apply_objection(
    buffer: RightsBuffer, state: PrivacyState, pipeline: Pipeline, stream: str, actor: str
) -> list[NewRecord]:
    """Object to ``stream``: stop its intake, destroy what is queued for it, audit."""
    event = "privacy.object"
    await _check_stream(buffer, pipeline, event, actor, stream)
    if not pipeline.policy.streams[stream].objectable:
        raise await _refuse(
            buffer,
            pipeline,
            event,
            actor,
            f"the {stream} stream is not objectable (legal basis {pipeline.policy.streams[stream].legal_basis})",
            stream,
        )
    change = await state.object(stream, actor)
    dropped = pipeline.drop_stream(stream)
    purged = await buffer.purge_stream(stream)
    return await _done(buffer, pipeline, change, purged=purged, open_windows_dropped=dropped)


async def apply_withdraw_objection(
    buffer: RightsBuffer, state: PrivacyState, pipeline: Pipeline, stream: str, actor: str
) -> list[NewRecord]:
    """Withdraw an objection: intake of ``stream`` resumes."""
    await _check_stream(buffer, pipeline, "privacy.object.withdraw", actor, stream)
    return await _done(buffer, pipeline, await state.withdraw_objection(stream, actor))


async def apply_restriction(
    buffer: RightsBuffer, state: PrivacyState, pipeline: Pipeline, stream: str, actor: str
) -> list[NewRecord]:
    """Restrict ``stream``: keep storing it, publish nothing of it until lifted."""
    event = "privacy.restrict"
    await _check_stream(buffer, pipeline, event, actor, stream)
    if not pipeline.policy.streams[stream].restrictable:
        raise await _refuse(buffer, pipeline, event, actor, f"the {stream} stream cannot be restricted", stream)
    return await _done(buffer, pipeline, await state.restrict(stream, actor))


async def apply_lift(
    buffer: RightsBuffer, state: PrivacyState, pipeline: Pipeline, stream: str, actor: str
) -> list[NewRecord]:
    """Lift a restriction: the stream's stored records are published again."""
    await _check_stream(buffer, pipeline, "privacy.restrict.lift", actor, stream)
    return await _done(buffer, pipeline, await state.lift(stream, actor))


async def apply_consent(
    buffer: RightsBuffer, state: PrivacyState, pipeline: Pipeline, name: str, actor: str
) -> list[NewRecord]:
    """Record a consent named in the register (e.g. ``p1-15min``)."""
    if name not in pipeline.policy.consents:
        known = ", ".join(sorted(pipeline.policy.consents)) or "none"
        raise await _refuse(buffer, pipeline, "privacy.consent", actor, f"unknown consent; known: {known}", "?")
    return await _done(buffer, pipeline, await state.consent(name, actor))


async def apply_withdraw_consent(
    buffer: RightsBuffer, state: PrivacyState, pipeline: Pipeline, name: str, actor: str
) -> list[NewRecord]:
    """Withdraw a consent: what was gathered under it and not yet sent is dropped."""
    if name not in pipeline.policy.consents:
        known = ", ".join(sorted(pipeline.policy.consents)) or "none"
        raise await _refuse(
            buffer, pipeline, "privacy.consent.withdraw", actor, f"unknown consent; known: {known}", "?"
        )
    return await _done(buffer, pipeline, await state.withdraw_consent(name, actor))


async def apply_erase(
    buffer: RightsBuffer, state: PrivacyState, pipeline: Pipeline, stream: str | None, actor: str
) -> list[NewRecord]:
    """Erase one stream or (``None``) everything: rows deleted, data keys destroyed, open windows
    dropped; erasing everything also replaces the pseudonym keys. The customer's choices
    (objections, restrictions, consents) are kept, so that an objection survives an erasure.
    The audit record, written after the erasure, carries only the stream and the count."""
    event = "privacy.erase"
    if stream is not None:
        await _check_stream(buffer, pipeline, event, actor, stream)
        pipeline.drop_stream(stream)
        removed = await buffer.purge_stream(stream)
    else:
        for name in pipeline.policy.streams:
            pipeline.drop_stream(name)
        removed = await buffer.erase_all()
        pipeline.keys = await PseudonymKeys.reset(buffer, epoch_days=pipeline.keys.epoch_days)
        await state.save()
    record = pipeline.audit(event, actor, "done", details={"stream": stream or "all", "removed": removed})
    await buffer.put([record])
    return [record]


def register_view(
    policy: Policy, *, region: str, state: PrivacyState | None, epoch_days: int | None = None
) -> dict[str, Any]:
    """The register as this device enforces it: per stream its policy and, when ``state`` is
    known, the current choices (objected, restricted, intake on, effective windows)."""
    objected = state.objected_streams() if state else frozenset()
    restricted = state.restricted_streams() if state else frozenset()
    consents = state.consents_given() if state else frozenset()
    streams: dict[str, Any] = {}
    for name, stream in policy.streams.items():
        windows = {
            pattern: stream.window_s(pattern, consents) for rule in stream.windows for pattern in rule.device_types
        }
        entry: dict[str, Any] = dict(msgspec.to_builtins(stream))
        entry["state"] = (
            None
            if state is None
            else {
                "objected": name in objected,
                "restricted": name in restricted,
                "intake": name not in objected and (not stream.needs_consent or stream.needs_consent in consents),
                "effective_windows_s": windows,
            }
        )
        streams[name] = entry
    document = to_builtins(policy)
    document["streams"] = streams
    document["region_sent"] = region
    document["pseudonym_epoch_days"] = epoch_days
    document["choices"] = state.describe() if state else None
    return document


async def export_household(buffer: Any, state: PrivacyState, pipeline: Pipeline) -> dict[str, Any]:
    """Everything stored on this device about the household, decrypted, with the register.
    ``buffer`` needs ``export_all()`` (``buffer.adapter.AsyncBuffer``)."""
    records: list[StoredRecord] = await buffer.export_all()
    exported = []
    for record in records:
        try:
            body: Any = msgspec.to_builtins(body_decoder.decode(record.payload))
        except msgspec.DecodeError:
            body = {"undecodable_payload": record.payload.decode("utf-8", "replace")}
        exported.append(
            {
                "id": record.id,
                "stream": record.stream,
                "route": record.route,
                "priority": record.priority,
                "created": iso_utc(record.created_s),
                "created_s": record.created_s,
                "body": body,
            }
        )
    return {
        "format": "heatgate.privacy-export/1",
        "exported_at": iso_utc(time.time()),
        "register": register_view(
            pipeline.policy, region=pipeline.region, state=state, epoch_days=pipeline.keys.epoch_days
        ),
        "choices": state.describe(),
        "records": exported,
        "pseudonym_key_epochs": pipeline.keys.describe(),
    }


def dumps(document: dict[str, Any]) -> str:
    return json.dumps(document, indent=2, sort_keys=False, default=str)
