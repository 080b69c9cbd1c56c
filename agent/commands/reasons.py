"""Reason codes of refused and failed commands. They are part of the wire contract: stable
strings, never renamed. A refusal is decided before any handler runs; a failure happens while
an accepted command runs."""

from __future__ import annotations

from typing import Final

__all__ = ["FAILURE_REASONS", "REFUSAL_REASONS"]

UNSIGNED: Final = "unsigned"
"""The envelope carries no signature."""
BAD_SIGNATURE: Final = "bad_signature"
"""The signature does not verify with the named key (or is not 64 bytes of base64url)."""
UNKNOWN_KEY: Final = "unknown_key"
"""``key_id`` names no pinned command key."""
EXPIRED: Final = "expired"
"""Now is past ``expires_at`` + the clock-skew tolerance."""
NOT_YET_VALID: Final = "not_yet_valid"
"""Now is before ``issued_at`` - the clock-skew tolerance."""
REPLAYED: Final = "replayed"
"""The nonce was seen before (or is older than what the bounded nonce store can still vouch for)."""
WRONG_TARGET: Final = "wrong_target"
"""``target`` is another gateway."""
UNKNOWN_COMMAND: Final = "unknown_command"
"""The command is not in the catalog, or not enabled on this gateway."""
MALFORMED: Final = "malformed"
"""Not JSON, a missing or mistyped field, bad arguments, a validity window that is empty or too long."""
OVERSIZE: Final = "oversize"
"""More bytes than ``max_bytes``; refused before parsing."""
APPROVAL_REQUIRED: Final = "approval_required"
"""``device.write`` without an operator approval."""
BAD_APPROVAL: Final = "bad_approval"
"""The approval is unsigned, forged, by an unknown key, expired, replayed, for another gateway or
for another write than the command's arguments."""
NOT_WRITABLE: Final = "not_writable"
"""The device profile does not mark the point writable (or the device is unknown)."""
OUT_OF_BOUNDS: Final = "out_of_bounds"
"""The value is outside the profile's ``min``/``max`` (or not a finite number)."""

REFUSAL_REASONS: Final = frozenset(
    {
        UNSIGNED,
        BAD_SIGNATURE,
        UNKNOWN_KEY,
        EXPIRED,
        NOT_YET_VALID,
        REPLAYED,
        WRONG_TARGET,
        UNKNOWN_COMMAND,
        MALFORMED,
        OVERSIZE,
        APPROVAL_REQUIRED,
        BAD_APPROVAL,
        NOT_WRITABLE,
        OUT_OF_BOUNDS,
    }
)

HANDLER_ERROR: Final = "handler_error"
"""The handler raised :class:`agent.commands.dispatch.CommandFailed` (its detail says why) or
an unexpected error (logged with its traceback on the gateway)."""
TIMEOUT: Final = "timeout"
"""The handler did not finish within the processor's ``handler_timeout_s``."""
STATE_UNAVAILABLE: Final = "state_unavailable"
"""The nonce could not be recorded in the encrypted store, so the command was not run."""

FAILURE_REASONS: Final = frozenset({HANDLER_ERROR, TIMEOUT, STATE_UNAVAILABLE})
