"""The signed command envelope (wire format ``v: 1``) and its canonical signing bytes.

A command is one JSON object, UTF-8, at most ``max_bytes`` (16 KiB by default) and nested at
most ``MAX_DEPTH`` (8) levels deep, both checked before parsing::

    {"v": 1, "target": "gw-0001", "command": "privacy.object", "args": {"stream": "analytics"},
     "issued_at": 1714567800, "expires_at": 1714568100,
     "nonce": "<base64url of 16..48 random bytes, no padding>", "key_id": "<16 hex>",
     "signature": "<base64url of the 64-byte Ed25519 signature, no padding>"}

``device.write`` adds ``"approval"``: an object signed by an operator's approval key (distinct
from the backend's command key), binding the operator, the gateway and the exact write::

    {"operator": "op-42", "target": "gw-0001",
     "write": {"device": "heatpump", "point": "flow_setpoint", "value": 45.5},
     "issued_at": ..., "expires_at": ..., "nonce": "...", "key_id": "...", "signature": "..."}

Times are **integer seconds since the Unix epoch, UTC** (no time zones to parse, no leap-second
ambiguity). Unknown fields are refused (``malformed``).

**Canonical encoding.** What is signed is a domain tag followed by the JSON of the object with
its ``signature`` removed (and, in the envelope, ``approval`` removed when it is null): keys
sorted by code point at every level, no whitespace, strings as UTF-8 with only the escapes JSON
requires, integers as integers, floats in the shortest form that round-trips (``0.1``, ``1e21``)::

    command:  b"heatgate-cmd/v1\\n"      + canonical(envelope without signature)
    approval: b"heatgate-approval/v1\\n" + canonical(approval without signature)

The envelope's signature covers the approval including the approval's own signature. The
gateway decodes the received bytes, re-encodes what it decoded canonically and verifies that:
the order of fields, white space and escaping of the received JSON do not matter, and what is
acted upon is exactly what was signed. In Python, ``canonical_bytes`` is
``msgspec.json.encode(obj, order="sorted")``; ``json.dumps(obj, sort_keys=True,
separators=(",", ":"), ensure_ascii=False)`` gives the same bytes except for floats of 1e16 and
above (``1e+16``), which a signer in another language should avoid (send integers).
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
from typing import Annotated, Any, Final, Literal

import msgspec
from msgspec import Meta, Struct

from heatgate.agent.commands.errors import CommandError

__all__ = [
    "APPROVAL_DOMAIN",
    "COMMAND_DOMAIN",
    "DEFAULT_MAX_BYTES",
    "FIELD_NAMES",
    "MAX_DEPTH",
    "Approval",
    "Envelope",
    "NestingTooDeep",
    "Write",
    "approval_signing_bytes",
    "b64url_decode",
    "b64url_encode",
    "decode_envelope",
    "encode_envelope",
    "envelope_signing_bytes",
    "nesting_depth",
]

COMMAND_DOMAIN: Final = b"heatgate-cmd/v1\n"
APPROVAL_DOMAIN: Final = b"heatgate-approval/v1\n"
DEFAULT_MAX_BYTES: Final = 16 * 1024
MAX_DEPTH: Final = 8
"""Objects and arrays nested deeper than this are refused before parsing. A valid envelope needs 3
(envelope, approval, write); the parser recurses per level, and a few KiB of ``[`` would otherwise
exhaust the interpreter's recursion limit."""

# A JSON string, or an unterminated one running to the end: it always matches where it starts, so
# removing strings is one linear pass whatever the input (no retry from every quote).
_STRING: Final = re.compile(rb'"(?:[^"\\]|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_STEP: Final = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}

B64URL = r"^[A-Za-z0-9_-]+$"
Nonce = Annotated[
    str, Meta(min_length=22, max_length=64, pattern=B64URL, description="base64url (no padding) of 16..48 random bytes")
]
KeyId = Annotated[str, Meta(pattern=r"^[0-9a-f]{16}$", description="first 16 hex of SHA-256 of the raw public key")]
GatewayId = Annotated[str, Meta(min_length=1, max_length=128)]
CommandName = Annotated[str, Meta(min_length=1, max_length=64)]
Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
OperatorId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.@:-]{1,64}$")]
EpochS = Annotated[int, Meta(ge=0, le=2**40)]
Signature = Annotated[str, Meta(max_length=128)]


class Write(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One register write: device name, point name (from the device profile) and value."""

    device: Name
    point: Name
    value: int | float


class Approval(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """An operator's approval of exactly one write on one gateway."""

    operator: OperatorId
    target: GatewayId
    write: Write
    issued_at: EpochS
    expires_at: EpochS
    nonce: Nonce
    key_id: KeyId
    signature: Signature | None = None


class Envelope(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A command for one gateway; see the module docstring."""

    v: Literal[1]
    target: GatewayId
    command: CommandName
    args: dict[str, Any]
    issued_at: EpochS
    expires_at: EpochS
    nonce: Nonce
    key_id: KeyId
    approval: Approval | None = None
    signature: Signature | None = None


_decoder: Final = msgspec.json.Decoder(Envelope)

FIELD_NAMES: Final = (
    frozenset(Envelope.__struct_fields__) | frozenset(Approval.__struct_fields__) | frozenset(Write.__struct_fields__)
)
"""Every field name of the envelope and its parts (what an error may name without echoing the sender)."""


class NestingTooDeep(CommandError, msgspec.DecodeError):
    """The input nests objects or arrays deeper than :data:`MAX_DEPTH`; nothing was parsed.
    Still a :class:`msgspec.DecodeError`, so that every caller treats it as undecodable input."""

    def __init__(self, depth: int) -> None:
        super().__init__(f"nested {depth} levels deep, at most {MAX_DEPTH}")
        self.depth = depth


def nesting_depth(raw: bytes) -> int:
    """How deep objects and arrays nest in ``raw`` (brackets inside strings do not count), without
    parsing it; linear in ``len(raw)``. For bytes that are not JSON the figure is an upper bound of
    what a parser would reach before it stops."""
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_STEP[b] for b in brackets), default=0)


def decode_envelope(raw: bytes) -> Envelope:
    """Parse; raises ``msgspec.DecodeError`` / ``msgspec.ValidationError`` (both ``msgspec.MsgspecError``).
    Input nested deeper than :data:`MAX_DEPTH` raises :class:`NestingTooDeep` (a ``DecodeError``)
    before any parsing."""
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH:
        depth = nesting_depth(raw)
        if depth > MAX_DEPTH:
            raise NestingTooDeep(depth)
    try:
        return _decoder.decode(raw)
    except UnicodeDecodeError as exc:  # msgspec lets invalid UTF-8 in an object key through as this
        raise msgspec.DecodeError(f"invalid UTF-8 at byte {exc.start}") from None


def encode_envelope(envelope: Envelope) -> bytes:
    """The envelope as sent (canonical form, signature included)."""
    return msgspec.json.encode(envelope, order="sorted")


def _canonical(obj: Any) -> bytes:
    return msgspec.json.encode(obj, order="sorted")


def envelope_signing_bytes(envelope: Envelope) -> bytes:
    """The bytes the command key signs."""
    return COMMAND_DOMAIN + _canonical(msgspec.structs.replace(envelope, signature=None))


def approval_signing_bytes(approval: Approval) -> bytes:
    """The bytes the operator's approval key signs."""
    return APPROVAL_DOMAIN + _canonical(msgspec.structs.replace(approval, signature=None))


def b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: str) -> bytes:
    """Strict base64url without padding; raises ``ValueError``."""
    if not text or len(text) % 4 == 1 or not all(c.isascii() and (c.isalnum() or c in "-_") for c in text):
        raise ValueError("not base64url")
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except binascii.Error as exc:
        raise ValueError(f"not base64url: {exc}") from None
