"""The ``zwave-js`` source: listens to a Z-Wave JS server and turns its value updates into readings.

The server runs the Z-Wave stack (S0/S2, interviews, wake-up, multi-channel) against the stick;
this source is one WebSocket client of it. It reconnects with capped, jittered backoff when the
server goes away, and reports each node's status (alive, asleep, dead) in its health.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

import msgspec

from heatgate.backoff import Backoff
from heatgate.drivers.reading import PointKind, Reading, ReadingSink
from heatgate.drivers.zwavejs.client import ZwaveJsClient, ZwaveJsError
from heatgate.drivers.zwavejs.mapping import Point, ValueKey, map_notification_event, map_value
from heatgate.drivers.zwavejs.messages import (
    Event,
    NodeState,
    NodeStatus,
    NotificationArgs,
    SecurityClass,
    ServerState,
    ValueArgs,
    ValueMetadata,
    decode_as,
)
from heatgate.drivers.zwavejs.settings import ZwaveJsSource
from heatgate.logs import get_logger

__all__ = ["ZwaveJsRunner"]

UNKNOWN_NODE_TYPE = "zwave-sensor"
CONTROLLER_TYPE = "zwave-controller"
"""The device type of the controller's own readings (its home id, as an identifier)."""
_STATUS_EVENTS = {
    "sleep": NodeStatus.ASLEEP,
    "wake up": NodeStatus.AWAKE,
    "dead": NodeStatus.DEAD,
    "alive": NodeStatus.ALIVE,
}
_VALUE_EVENTS = frozenset({"value updated", "value added", "value notification"})


class _MetadataArgs(msgspec.Struct, kw_only=True):
    commandClass: int
    endpoint: int = 0
    property: str | int
    propertyKey: str | int | None = None
    metadata: ValueMetadata | None = None


@dataclass(slots=True)
class NodeHealth:
    status: int = NodeStatus.UNKNOWN
    ready: bool = False
    security_class: int | None = None
    last_seen: str | None = None
    last_report_ts: float | None = None


class ZwaveJsRunner:
    """A :class:`heatgate.drivers.reading.Source` for one Z-Wave JS server.

    Readings: device = the configured node name (``device_type`` from config), or ``node-<id>``
    / ``zwave-sensor`` for nodes not in config; on every (re)connection the controller's home id
    as an ``identifier`` reading (device ``controller``, point ``home_id``) and the current value
    of every mapped point.
    """

    def __init__(self, config: ZwaveJsSource) -> None:
        self.name = config.name
        self.config = config
        self._names = {node.node_id: (node.name, node.device_type) for node in config.nodes}
        self._backoff = Backoff(min_s=config.reconnect_min_s, max_s=config.reconnect_max_s)
        self._log = get_logger("heatgate.zwavejs")
        self._metadata: dict[ValueKey, ValueMetadata] = {}
        self.nodes: dict[int, NodeHealth] = {}
        self.state = "connecting"
        self.last_error: str | None = None
        self.connects = 0
        self.disconnects = 0
        self.readings = 0
        self.server_version: str | None = None
        self._sink: ReadingSink | None = None

    def health(self) -> dict[str, Any]:
        return {
            "type": "zwave-js",
            "url": self.config.url,
            "state": self.state,
            "last_error": self.last_error,
            "connects": self.connects,
            "disconnects": self.disconnects,
            "server_version": self.server_version,
            "readings": self.readings,
            "nodes": {
                self._device(node_id)[0]: {
                    "node_id": node_id,
                    "status": NodeStatus.NAMES.get(node.status, str(node.status)),
                    "ready": node.ready,
                    "security": SecurityClass.NAMES.get(node.security_class, None)
                    if node.security_class is not None
                    else None,
                    "last_seen": node.last_seen,
                    "last_report_ts": node.last_report_ts,
                }
                for node_id, node in sorted(self.nodes.items())
            },
            "nodes_dead": sum(1 for node in self.nodes.values() if node.status == NodeStatus.DEAD),
            "nodes_asleep": sum(1 for node in self.nodes.values() if node.status == NodeStatus.ASLEEP),
        }

    async def run(self, sink: ReadingSink) -> None:
        self._sink = sink
        while True:
            try:
                async with ZwaveJsClient.connect(
                    self.config.url, on_event=self._on_event, request_timeout_s=self.config.request_timeout_s
                ) as client:
                    state = await client.start_listening()
                    self.connects += 1
                    self.state = "connected"
                    self.last_error = None
                    self.server_version = client.version.serverVersion
                    self._backoff.reset()
                    self._log.info("zwavejs.connected", source=self.name, server=client.version.serverVersion)
                    await self._adopt(state, sink)
                    await client.wait_closed()
            except ZwaveJsError as exc:
                was_connected = self.state == "connected"
                self.state = "disconnected"
                self.last_error = str(exc)
                if was_connected:
                    self.disconnects += 1
                for node in self.nodes.values():
                    node.ready = False
                delay_s = self._backoff.next_delay_s()
                (self._log.warning if was_connected else self._log.info)(
                    "zwavejs.disconnected", source=self.name, error=str(exc), retry_in_s=round(delay_s, 2)
                )
                await asyncio.sleep(delay_s)

    def _device(self, node_id: int) -> tuple[str, str]:
        return self._names.get(node_id, (f"node-{node_id}", UNKNOWN_NODE_TYPE))

    async def _adopt(self, state: ServerState, sink: ReadingSink) -> None:
        now = time.time()
        readings: list[Reading] = []
        if state.controller.homeId is not None:
            readings.append(
                Reading(
                    source=self.name,
                    device="controller",
                    device_type=CONTROLLER_TYPE,
                    point="home_id",
                    kind=PointKind.IDENTIFIER,
                    value=f"{state.controller.homeId:08x}",
                    ts=now,
                )
            )
        own = state.controller.ownNodeId
        for node in state.nodes:
            if node.nodeId == own:
                continue
            self._node_state(node)
            for value in node.values:
                key = ValueKey(node.nodeId, value.endpoint, value.commandClass, value.property, value.propertyKey)
                self._metadata[key] = value.metadata
                if value.value is not None:
                    readings.extend(self._readings(node.nodeId, map_value(key, value.value, value.metadata), now))
        await self._emit(readings)

    def _node_state(self, node: NodeState) -> None:
        health = self.nodes.setdefault(node.nodeId, NodeHealth())
        health.status = node.status
        health.ready = node.ready
        health.security_class = node.highestSecurityClass
        if node.statistics is not None and node.statistics.lastSeen:
            health.last_seen = node.statistics.lastSeen

    def _readings(self, node_id: int, points: list[Point], ts: float) -> list[Reading]:
        if not points:
            return []
        device, device_type = self._device(node_id)
        self.nodes.setdefault(node_id, NodeHealth()).last_report_ts = ts
        return [
            Reading(
                source=self.name,
                device=device,
                device_type=device_type,
                point=p.point,
                kind=p.kind,
                value=p.value,
                ts=ts,
                unit=p.unit,
                text=p.text,
            )
            for p in points
        ]

    async def _emit(self, readings: list[Reading]) -> None:
        if readings and self._sink is not None:
            self.readings += len(readings)
            await self._sink(readings)

    async def _on_event(self, event: Event) -> None:
        try:
            await self._handle(event)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._log.info("zwavejs.bad_event", source=self.name, event=event.event, error=str(exc))

    async def _handle(self, event: Event) -> None:
        node_id = event.nodeId
        if event.source == "controller" and event.event in ("node added", "node removed") and event.node:
            node = decode_as(event.node, NodeState)
            if event.event == "node added":
                self._node_state(node)
            else:
                self.nodes.pop(node.nodeId, None)
            return
        if event.source != "node" or node_id is None:
            return
        name = event.event
        if name in _VALUE_EVENTS and event.args:
            args = decode_as(event.args, ValueArgs)
            key = ValueKey(node_id, args.endpoint, args.commandClass, args.property, args.propertyKey)
            value = args.value if name == "value notification" else args.newValue
            await self._emit(self._readings(node_id, map_value(key, value, self._metadata.get(key)), time.time()))
        elif name == "metadata updated" and event.args:
            meta = decode_as(event.args, _MetadataArgs)
            if meta.metadata is not None:
                key = ValueKey(node_id, meta.endpoint, meta.commandClass, meta.property, meta.propertyKey)
                self._metadata[key] = meta.metadata
        elif name == "notification" and event.ccId == 0x71 and event.args:
            args_n = decode_as(event.args, NotificationArgs)
            point = map_notification_event(event.endpointIndex or 0, args_n.type, args_n.event, args_n.eventLabel)
            await self._emit(self._readings(node_id, [point], time.time()))
        elif name in _STATUS_EVENTS:
            self.nodes.setdefault(node_id, NodeHealth()).status = _STATUS_EVENTS[name]
            if name == "dead":
                self._log.warning("zwavejs.node_dead", source=self.name, node=node_id)
        elif name in ("ready", "interview completed"):
            self.nodes.setdefault(node_id, NodeHealth()).ready = True
        elif name == "statistics updated" and event.statistics is not None:
            seen = event.statistics.get("lastSeen")
            if isinstance(seen, str):
                self.nodes.setdefault(node_id, NodeHealth()).last_seen = seen
