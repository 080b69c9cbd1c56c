"""Deciding whether an envelope may run: ``CommandVerifier.verify(raw) -> Verified | Refusal``.

The checks, in order (the first that fails gives the reason code, see :mod:`agent.commands.reasons`):

1. ``oversize``: more than ``max_bytes``, refused before parsing;
2. ``malformed``: nested deeper than ``MAX_DEPTH`` (refused before parsing), or not a JSON
   envelope of the right shape; ``unsigned``: no signature;
3. ``unknown_key``, ``bad_signature``: the command key, pinned by key id;
4. ``wrong_target``; ``malformed`` for an empty validity window or one longer than ``max_ttl_s``;
   ``not_yet_valid``, ``expired`` (each with ``skew_s`` of tolerance);
5. ``unknown_command``; ``malformed`` for arguments that do not fit the command's type;
   ``malformed`` for an approval on any command but ``device.write``;
6. for ``device.write``: ``approval_required``; ``bad_approval`` (unknown or command key,
   forged, other gateway, other write, expired or not yet valid); ``not_writable``,
   ``out_of_bounds`` from the profile's ``write_bounds(device, point)``;
7. ``replayed``: the nonce (and the approval's nonce) was used before. Only an envelope that
   passed every other check consumes its nonce, so a refused command can be corrected and
   re-signed with the same nonce, and an accepted one runs at most once.

Only authenticated envelopes (past step 3) report their key id and command; the detail of a
refusal never echoes argument values. Before authentication nothing in the envelope can be
believed and anyone may have sent it, so the detail of those refusals is built from the gateway's
own words only (reason, sizes, the envelope's own field names), never from the sender's text.

A refusal that a *valid new command* could get (authentic, addressed here, within its validity,
not a replay: steps 5 and 6) carries the envelope's signature as its ``fingerprint``, so that the
processor can tell its first arrival (always audited) from a copy sent again.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from heatgate.agent.commands import reasons
from heatgate.agent.commands.catalog import COMMANDS, WRITE_COMMAND, DeviceWriteArgs
from heatgate.agent.commands.envelope import (
    DEFAULT_MAX_BYTES,
    FIELD_NAMES,
    MAX_DEPTH,
    Envelope,
    NestingTooDeep,
    approval_signing_bytes,
    b64url_decode,
    decode_envelope,
    envelope_signing_bytes,
)
from heatgate.agent.commands.keys import RawPublicKey, key_id
from heatgate.agent.commands.nonces import NonceStore, NonceStoreError
from heatgate.sodium import Ed25519PublicKey

__all__ = ["CommandVerifier", "NonceUnrecorded", "Refusal", "Verified", "WriteBounds"]

WriteBounds = Callable[[str, str], "tuple[float, float] | None"]
"""``write_bounds(device, point)``: ``(min, max)`` if the profile marks the point writable, else None."""

DEFAULT_MAX_TTL_S: Final = 3600
DETAIL_MAX_CHARS: Final = 200


@dataclass(frozen=True, slots=True)
class Verified:
    """An envelope that may run. ``args`` is the command's typed argument value."""

    envelope: Envelope
    args: Any
    key_id: str
    operator: str | None = None

    @property
    def command(self) -> str:
        return self.envelope.command


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why an envelope may not run. ``command`` and ``key_id`` are set only once the envelope's
    signature verified (before that, nothing in it can be believed)."""

    reason: str
    detail: str
    command: str | None = None
    key_id: str | None = None
    nonce: str | None = None
    fingerprint: str | None = None
    """The envelope's signature, set only where a valid new command could be refused this way."""


class NonceUnrecorded(NonceStoreError):
    """An envelope that passed every check but whose nonce could not be persisted (so it must not
    run). Carries what the processor needs to answer and audit it."""

    def __init__(self, reason: str, *, command: str, key_id: str, nonce: str, fingerprint: str) -> None:
        super().__init__(reason)
        self.command = command
        self.key_id = key_id
        self.nonce = nonce
        self.fingerprint = fingerprint


_ERROR_PATH: Final = re.compile(r" - at `(\$[^`]*)`$")
_MISSING_FIELD: Final = re.compile(r"^Object missing required field `([a-z_]+)`")


def _unverified_malformed(exc: msgspec.MsgspecError, size_bytes: int) -> str:
    """The detail of an envelope that does not parse, in the gateway's own words: the parser's
    messages quote the sender's field names and values, which must not reach the audit stream."""
    if isinstance(exc, NestingTooDeep):
        return f"not an envelope: nested {exc.depth} levels deep, at most {MAX_DEPTH} ({size_bytes} bytes)"
    if not isinstance(exc, msgspec.ValidationError):
        return f"not JSON ({size_bytes} bytes)"
    message = str(exc)
    found = _ERROR_PATH.search(message)
    parts = found.group(1).split(".")[1:] if found else []
    where = "$" + "".join(f".{p}" for p in parts) if found and set(parts) <= FIELD_NAMES else None
    missing = _MISSING_FIELD.match(message)
    if message.startswith("Object contains unknown field"):
        what = "an unknown field"
    elif missing and missing.group(1) in FIELD_NAMES:
        what = f"missing field `{missing.group(1)}`"
    elif message.startswith("Expected"):
        what = "a value of the wrong type or form"
    else:
        what = "an invalid value"
    at = f" at `{where}`" if where is not None else ""
    return f"not an envelope: {what}{at} ({size_bytes} bytes)"


def _short(text: str) -> str:
    return text if len(text) <= DETAIL_MAX_CHARS else text[: DETAIL_MAX_CHARS - 1] + "…"


def _signature_ok(key: Ed25519PublicKey, signature: str, message: bytes) -> bool:
    try:
        raw = b64url_decode(signature)
    except ValueError:
        return False
    return key.verifies(raw, message)


class CommandVerifier:
    """Checks envelopes for one gateway. Key dicts map key id -> Ed25519 public key (any that gives
    its raw bytes: :mod:`heatgate.sodium`'s, or ``cryptography``'s in tests); the approval keys
    must be distinct from the command keys (a command key can never approve a write).
    ``clock`` gives seconds since the epoch (UTC)."""

    def __init__(
        self,
        gateway_id: str,
        command_keys: Mapping[str, RawPublicKey],
        approval_keys: Mapping[str, RawPublicKey],
        nonces: NonceStore,
        *,
        clock: Callable[[], float] = time.time,
        skew_s: float = 60.0,
        max_ttl_s: float = DEFAULT_MAX_TTL_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        write_bounds: WriteBounds | None = None,
        enabled_commands: frozenset[str] | None = None,
    ) -> None:
        shared = set(command_keys) & set(approval_keys)
        if shared:
            raise ValueError(f"key(s) {sorted(shared)} pinned as both command and approval key")
        for pinned in (command_keys, approval_keys):
            for kid, key in pinned.items():
                if key_id(key) != kid:
                    raise ValueError(f"key id {kid} does not match its public key")
        self.gateway_id = gateway_id
        self._command_keys = {kid: Ed25519PublicKey(key.public_bytes_raw()) for kid, key in command_keys.items()}
        self._approval_keys = {kid: Ed25519PublicKey(key.public_bytes_raw()) for kid, key in approval_keys.items()}
        self._nonces = nonces
        self._clock = clock
        self.skew_s = skew_s
        self.max_ttl_s = max_ttl_s
        self.max_bytes = max_bytes
        self._write_bounds = write_bounds
        self._enabled = frozenset(COMMANDS) if enabled_commands is None else enabled_commands & frozenset(COMMANDS)

    async def verify(self, raw: bytes) -> Verified | Refusal:
        """Never raises for any input, except :class:`NonceUnrecorded` when the nonce of an
        otherwise valid envelope cannot be persisted."""
        if len(raw) > self.max_bytes:
            return Refusal(reasons.OVERSIZE, f"{len(raw)} bytes, at most {self.max_bytes}")
        try:
            envelope = decode_envelope(raw)
        except msgspec.MsgspecError as exc:
            return Refusal(reasons.MALFORMED, _unverified_malformed(exc, len(raw)))
        if not envelope.signature:
            return Refusal(reasons.UNSIGNED, "the envelope has no signature")
        key = self._command_keys.get(envelope.key_id)
        if key is None:
            what = "an approval key, not a command key" if envelope.key_id in self._approval_keys else "not pinned"
            return Refusal(reasons.UNKNOWN_KEY, f"the envelope's key is {what}")
        if not _signature_ok(key, envelope.signature, envelope_signing_bytes(envelope)):
            return Refusal(reasons.BAD_SIGNATURE, "the signature does not verify with the named key")
        try:
            return await self._authentic(envelope)
        except NonceStoreError as exc:
            raise NonceUnrecorded(
                exc.reason,
                command=envelope.command,
                key_id=envelope.key_id,
                nonce=envelope.nonce,
                fingerprint=envelope.signature,
            ) from exc

    async def _authentic(self, envelope: Envelope) -> Verified | Refusal:
        in_scope = False  # addressed here and within its validity: a valid new command could be refused now

        def refuse(reason: str, detail: str) -> Refusal:
            return Refusal(
                reason,
                _short(detail),
                command=envelope.command if envelope.command in COMMANDS else None,
                key_id=envelope.key_id,
                nonce=envelope.nonce,
                fingerprint=envelope.signature if in_scope and reason != reasons.REPLAYED else None,
            )

        if envelope.target != self.gateway_id:
            return refuse(reasons.WRONG_TARGET, "addressed to another gateway")
        window = self._window(envelope.issued_at, envelope.expires_at)
        if window is not None:
            return refuse(*window)
        in_scope = True
        args_type = COMMANDS.get(envelope.command)
        if args_type is None or envelope.command not in self._enabled:
            return refuse(reasons.UNKNOWN_COMMAND, "not a command of this gateway")
        try:
            args = msgspec.convert(envelope.args, args_type)
        except msgspec.ValidationError as exc:
            return refuse(reasons.MALFORMED, f"args: {exc}")
        operator: str | None = None
        if envelope.command == WRITE_COMMAND:
            assert isinstance(args, DeviceWriteArgs)
            problem = self._check_write(envelope, args)
            if problem is not None:
                return refuse(*problem)
            assert envelope.approval is not None
            operator = envelope.approval.operator
        elif envelope.approval is not None:
            return refuse(reasons.MALFORMED, f"an approval is only for {WRITE_COMMAND}")
        if self._nonces.seen(envelope.nonce) or (
            envelope.approval is not None and self._nonces.seen("approval:" + envelope.approval.nonce)
        ):
            return refuse(reasons.REPLAYED, "this nonce was used before")
        if envelope.approval is not None and not await self._nonces.remember(
            "approval:" + envelope.approval.nonce, envelope.approval.expires_at + self.skew_s
        ):
            return refuse(reasons.REPLAYED, "this approval was used before")
        if not await self._nonces.remember(envelope.nonce, envelope.expires_at + self.skew_s):
            return refuse(reasons.REPLAYED, "this nonce was used before, or is older than the nonce store's horizon")
        return Verified(envelope=envelope, args=args, key_id=envelope.key_id, operator=operator)

    def _window(self, issued_at: int, expires_at: int) -> tuple[str, str] | None:
        if expires_at <= issued_at:
            return reasons.MALFORMED, "expires_at must be after issued_at"
        if expires_at - issued_at > self.max_ttl_s:
            return reasons.MALFORMED, f"valid for {expires_at - issued_at} s, at most {self.max_ttl_s:g} s"
        now = self._clock()
        if now < issued_at - self.skew_s:
            return reasons.NOT_YET_VALID, f"issued {issued_at - now:.0f} s in the future"
        if now > expires_at + self.skew_s:
            return reasons.EXPIRED, f"expired {now - expires_at:.0f} s ago"
        return None

    def _check_write(self, envelope: Envelope, args: DeviceWriteArgs) -> tuple[str, str] | None:
        approval = envelope.approval
        if approval is None:
            return reasons.APPROVAL_REQUIRED, f"{WRITE_COMMAND} needs an operator approval"
        if not approval.signature:
            return reasons.BAD_APPROVAL, "the approval has no signature"
        key = self._approval_keys.get(approval.key_id)
        if key is None:
            what = "a command key" if approval.key_id in self._command_keys else "not pinned"
            return reasons.BAD_APPROVAL, f"approval key {approval.key_id} is {what}"
        if not _signature_ok(key, approval.signature, approval_signing_bytes(approval)):
            return reasons.BAD_APPROVAL, f"the approval signature does not verify with key {approval.key_id}"
        if approval.target != self.gateway_id:
            return reasons.BAD_APPROVAL, "the approval is for another gateway"
        write = approval.write
        if (write.device, write.point) != (args.device, args.point) or not _same_value(write.value, args.value):
            return reasons.BAD_APPROVAL, "the approval is for another write"
        window = self._window(approval.issued_at, approval.expires_at)
        if window is not None:
            return reasons.BAD_APPROVAL, f"approval {window[0]}: {window[1]}"
        bounds = self._write_bounds(args.device, args.point) if self._write_bounds is not None else None
        if bounds is None:
            return reasons.NOT_WRITABLE, f"{args.device}.{args.point} is not writable"
        low, high = bounds
        if not math.isfinite(args.value) or not low <= args.value <= high:
            return reasons.OUT_OF_BOUNDS, f"{args.device}.{args.point} accepts {low:g}..{high:g}"
        return None


def _same_value(a: float, b: float) -> bool:
    return type(a) is type(b) and a == b
