"""The commands a gateway understands and the type of each one's ``args``.

Arguments are checked against these types before any handler runs (unknown fields are
refused); a handler receives the typed value in ``CommandContext.args``.

| command | args |
|---|---|
| ``ping`` | none |
| ``status`` | none |
| ``privacy.object`` / ``privacy.withdraw_objection`` | ``stream`` |
| ``privacy.restrict`` / ``privacy.lift`` | ``stream`` |
| ``privacy.consent`` / ``privacy.withdraw_consent`` | ``consent`` (e.g. ``p1-15min``) |
| ``privacy.erase`` | ``stream``, or ``all: true`` |
| ``privacy.export`` | ``recipient``: base64url of the requester's raw X25519 public key |
| ``device.write`` | ``device``, ``point``, ``value`` (and an operator approval of that write) |
"""

from __future__ import annotations

from typing import Annotated, Final

from msgspec import Meta, Struct

__all__ = [
    "COMMANDS",
    "WRITE_COMMAND",
    "ConsentArgs",
    "DeviceWriteArgs",
    "EraseArgs",
    "ExportArgs",
    "NoArgs",
    "StreamArgs",
]

Name = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_.:-]{1,64}$")]
RecipientKey = Annotated[
    str, Meta(pattern=r"^[A-Za-z0-9_-]{43}$", description="base64url (no padding) of a raw 32-byte X25519 public key")
]


class _Args(Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pass


class NoArgs(_Args, frozen=True, kw_only=True):
    pass


class StreamArgs(_Args, frozen=True, kw_only=True):
    stream: Name


class ConsentArgs(_Args, frozen=True, kw_only=True):
    consent: Name


class EraseArgs(_Args, frozen=True, kw_only=True):
    """Exactly one of ``stream`` and ``all: true``."""

    stream: Name | None = None
    all: bool = False

    def __post_init__(self) -> None:
        if (self.stream is None) == (not self.all):
            raise ValueError("give either stream or all=true")


class ExportArgs(_Args, frozen=True, kw_only=True):
    recipient: RecipientKey


class DeviceWriteArgs(_Args, frozen=True, kw_only=True):
    device: Name
    point: Name
    value: int | float


WRITE_COMMAND: Final = "device.write"
EXPORT_COMMAND: Final = "privacy.export"

COMMANDS: Final[dict[str, type[_Args]]] = {
    "ping": NoArgs,
    "status": NoArgs,
    "privacy.object": StreamArgs,
    "privacy.withdraw_objection": StreamArgs,
    "privacy.restrict": StreamArgs,
    "privacy.lift": StreamArgs,
    "privacy.consent": ConsentArgs,
    "privacy.withdraw_consent": ConsentArgs,
    "privacy.erase": EraseArgs,
    EXPORT_COMMAND: ExportArgs,
    WRITE_COMMAND: DeviceWriteArgs,
}
"""Command name -> the type of its ``args``."""
