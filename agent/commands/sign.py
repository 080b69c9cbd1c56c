"""The backend side: building and signing envelopes and approvals (``heatgate cmd``, tests)."""

from __future__ import annotations

import secrets
import time
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from heatgate.agent.commands.envelope import (
    Approval,
    Envelope,
    Write,
    approval_signing_bytes,
    b64url_encode,
    envelope_signing_bytes,
)
from heatgate.agent.commands.keys import key_id

__all__ = ["new_nonce", "sign_approval", "sign_envelope"]

NONCE_BYTES = 16


def new_nonce() -> str:
    """128 random bits, base64url without padding (22 characters)."""
    return b64url_encode(secrets.token_bytes(NONCE_BYTES))


def sign_approval(
    key: Ed25519PrivateKey,
    *,
    operator: str,
    target: str,
    device: str,
    point: str,
    value: int | float,
    ttl_s: int = 300,
    issued_at: int | None = None,
    nonce: str | None = None,
) -> Approval:
    """An operator's signed approval of one write on one gateway."""
    issued = int(time.time()) if issued_at is None else issued_at
    approval = Approval(
        operator=operator,
        target=target,
        write=Write(device=device, point=point, value=value),
        issued_at=issued,
        expires_at=issued + ttl_s,
        nonce=nonce or new_nonce(),
        key_id=key_id(key.public_key()),
    )
    signature = b64url_encode(key.sign(approval_signing_bytes(approval)))
    return Approval(**{**_fields(approval), "signature": signature})


def sign_envelope(
    key: Ed25519PrivateKey,
    *,
    target: str,
    command: str,
    args: dict[str, Any] | None = None,
    ttl_s: int = 300,
    issued_at: int | None = None,
    nonce: str | None = None,
    approval: Approval | None = None,
) -> Envelope:
    """A signed command envelope."""
    issued = int(time.time()) if issued_at is None else issued_at
    envelope = Envelope(
        v=1,
        target=target,
        command=command,
        args=dict(args or {}),
        issued_at=issued,
        expires_at=issued + ttl_s,
        nonce=nonce or new_nonce(),
        key_id=key_id(key.public_key()),
        approval=approval,
    )
    signature = b64url_encode(key.sign(envelope_signing_bytes(envelope)))
    return Envelope(**{**_fields(envelope), "signature": signature})


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__struct_fields__}
