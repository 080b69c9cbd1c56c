"""Adding and removing devices through a Z-Wave JS server: S2 inclusion with the device's
PIN/DSK, SmartStart provisioning from its QR code, exclusion, the node list.

Each call takes a connected :class:`ZwaveJsClient` whose ``on_event`` is an
:class:`EventInbox` (the server's inclusion prompts are events that must be answered with
commands, and commands cannot be awaited from inside the client's event callback).
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any

from heatgate.drivers.zwavejs.client import ZwaveJsClient, ZwaveJsError
from heatgate.drivers.zwavejs.messages import Event, NodeState, SecurityClass, decode_as

__all__ = [
    "EventInbox",
    "InclusionFailed",
    "Outcome",
    "exclude",
    "include",
    "normalise_dsk",
    "provision_smartstart",
    "provisioning_entries",
    "unprovision_smartstart",
]

INCLUSION_STRATEGY_S2 = 4
"""zwave-js ``InclusionStrategy.Security_S2``: asks for the grant and the PIN through events."""
EXCLUSION_STRATEGY_UNPROVISION = 2
"""zwave-js ``ExclusionStrategy.Unprovision``: also drops the node's SmartStart entry."""
KEX_FAIL_CANCELED = 6
_DSK_RE = re.compile(r"^\d{5}(-\d{5}){7}$")
_PIN_RE = re.compile(r"^\d{5}$")


class InclusionFailed(ZwaveJsError):
    """Inclusion or exclusion did not complete; ``reason`` says why in a sentence."""

    def __init__(self, reason: str, *, url: str) -> None:
        super().__init__(reason, url=url)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Outcome:
    node_id: int
    security_class: str | None
    low_security: bool = False
    low_security_reason: str | None = None


class EventInbox:
    """A bounded inbox of the client's events, for flows that answer them with commands."""

    def __init__(self, size: int = 256) -> None:
        self._queue: asyncio.Queue[Event] = asyncio.Queue(size)

    async def __call__(self, event: Event) -> None:
        await self._queue.put(event)

    async def next(self, deadline: float) -> Event:
        timeout_s = deadline - asyncio.get_running_loop().time()
        if timeout_s <= 0:
            raise TimeoutError
        return await asyncio.wait_for(self._queue.get(), timeout_s)


def normalise_dsk(text: str) -> str:
    """A DSK as ``12345-12345-…`` (8 blocks) or a 5-digit PIN; raises ValueError otherwise."""
    compact = re.sub(r"[\s-]", "", text)
    if len(compact) == 40 and compact.isdigit():
        blocks = "-".join(compact[i : i + 5] for i in range(0, 40, 5))
        if all(int(block) <= 65535 for block in blocks.split("-")):
            return blocks
    if _PIN_RE.match(compact):
        return compact
    raise ValueError("a DSK is 40 digits (8 blocks of 5, each at most 65535) or its first 5 digits, the PIN")


def _outcome(event: Event) -> Outcome:
    node = decode_as(event.node, NodeState)
    result: dict[str, Any] = event.result or {}
    level = node.highestSecurityClass
    return Outcome(
        node_id=node.nodeId,
        security_class=SecurityClass.NAMES.get(level) if level is not None else None,
        low_security=bool(result.get("lowSecurity")),
        low_security_reason=str(result["lowSecurityReason"]) if result.get("lowSecurityReason") is not None else None,
    )


async def include(client: ZwaveJsClient, inbox: EventInbox, *, dsk: str | None, timeout_s: float) -> Outcome:
    """Run one S2 inclusion: grant the classes the device asks for and confirm its DSK with the
    PIN (the DSK's first block). Without ``dsk`` a device asking for S2 Authenticated or Access
    Control is refused those classes (it ends up with less: see :attr:`Outcome.low_security`)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    await client.command("controller.begin_inclusion", options={"strategy": INCLUSION_STRATEGY_S2})
    try:
        while True:
            try:
                event = await inbox.next(deadline)
            except TimeoutError:
                raise InclusionFailed(f"no device joined within {timeout_s:g} s", url=client.url) from None
            if event.source != "controller":
                continue
            if event.event == "grant security classes":
                requested = (event.requested or {}).get("securityClasses", [])
                unauthenticated = (SecurityClass.S2_UNAUTHENTICATED, SecurityClass.S0_LEGACY)
                granted = [c for c in requested if dsk is not None or c in unauthenticated]
                await client.command(
                    "controller.grant_security_classes",
                    inclusionGrant={"securityClasses": granted, "clientSideAuth": False},
                )
            elif event.event == "validate dsk and enter pin":
                # zwave-js shows the DSK without its first block (the PIN), e.g. "-12345-…".
                shown = (event.dsk or "").lstrip("x").lstrip("-")
                if dsk is None or (len(dsk) > 5 and not dsk.endswith(shown)):
                    await client.command("controller.cancel_secure_bootstrap_s2", reason=KEX_FAIL_CANCELED)
                    why = "no DSK given" if dsk is None else "the device's DSK does not match the one given"
                    raise InclusionFailed(f"S2 bootstrap canceled: {why}", url=client.url)
                await client.command("controller.validate_dsk_and_enter_pin", pin=dsk[:5])
            elif event.event == "node added":
                return _outcome(event)
            elif event.event in ("inclusion failed", "inclusion aborted"):
                raise InclusionFailed(event.event, url=client.url)
    finally:
        try:
            await client.command("controller.stop_inclusion", timeout_s=5)
        except ZwaveJsError:
            pass  # not including any more (the node was added, or the server went away)


async def exclude(client: ZwaveJsClient, inbox: EventInbox, *, timeout_s: float) -> int:
    """Run one exclusion; the id of the node that left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    await client.command("controller.begin_exclusion", options={"strategy": EXCLUSION_STRATEGY_UNPROVISION})
    try:
        while True:
            try:
                event = await inbox.next(deadline)
            except TimeoutError:
                raise InclusionFailed(f"no device left within {timeout_s:g} s", url=client.url) from None
            if event.source == "controller" and event.event == "node removed" and event.node:
                return decode_as(event.node, NodeState).nodeId
            if event.source == "controller" and event.event == "exclusion failed":
                raise InclusionFailed("exclusion failed", url=client.url)
    finally:
        try:
            await client.command("controller.stop_exclusion", timeout_s=5)
        except ZwaveJsError:
            pass


async def provision_smartstart(client: ZwaveJsClient, qr: str) -> None:
    """Add the device of a SmartStart QR code to the provisioning list: it joins by itself,
    securely, when it is powered within range."""
    await client.command("controller.provision_smart_start_node", entry=qr.strip())


async def unprovision_smartstart(client: ZwaveJsClient, dsk: str) -> None:
    """Remove the SmartStart entry of ``dsk`` (the device, if included, stays)."""
    await client.command("controller.unprovision_smart_start_node", dskOrNodeId=dsk)


async def provisioning_entries(client: ZwaveJsClient) -> list[dict[str, Any]]:
    """The SmartStart provisioning list (each entry's ``dsk``, ``securityClasses``, ``status``, …)."""
    result = await client.command("controller.get_provisioning_entries")
    entries = result.get("entries", [])
    return [entry for entry in entries if isinstance(entry, dict)]
