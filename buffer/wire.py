"""A record's wire form: the JSON object ``{"id":…,"body":…}`` that a published message's
``records`` array holds, made once when the record is committed.

The buffer stores (encrypted) this form instead of the bare body, so that the publisher joins
bytes instead of encoding each record on every drain. The body is the record's JSON as the
producer gave it, spliced in unchanged; the id is JSON-encoded by msgspec. The encoding-side
envelope :class:`heatgate.agent.payloads.RawRecord` encodes to the same bytes (a test checks).
"""

from __future__ import annotations

import msgspec

__all__ = ["body_of", "wire_form"]


class _WireRecord(msgspec.Struct, frozen=True, gc=False):
    id: str
    body: msgspec.Raw


_encode = msgspec.json.Encoder().encode
_BODY_KEY = b',"body":'


def wire_form(record_id: str, body: bytes) -> bytes:
    """``{"id":<record_id as JSON>,"body":<body>}``; ``body`` must be one JSON value."""
    return _encode(_WireRecord(record_id, msgspec.Raw(body)))


def body_of(record_id: str, wire: bytes) -> bytes:
    """The body that :func:`wire_form` spliced in, sliced back out (no JSON parsing)."""
    start = len(b'{"id":') + len(_encode(record_id)) + len(_BODY_KEY)
    return wire[start:-1]
