"""The Z-Wave source: owns the controller's serial port, runs the host protocol, turns
node reports into readings, survives the USB stick being pulled."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from heatgate.backoff import Backoff
from heatgate.drivers.reading import PointKind, Reading, ReadingSink
from heatgate.drivers.serialport import REOPEN_MAX_S, REOPEN_MIN_S, PortKeeper, SerialLink, line_settings
from heatgate.drivers.zwave import commandclasses as cc
from heatgate.drivers.zwave.frames import DataFrame, ZwaveError
from heatgate.drivers.zwave.host import FUNC_APPLICATION_COMMAND, FUNC_BRIDGE_COMMAND, HostStats, ZwaveHost
from heatgate.drivers.zwave.settings import ZwaveSource
from heatgate.logs import get_logger

__all__ = ["ZwaveRunner", "parse_application_command"]

UNKNOWN_NODE_TYPE = "zwave-sensor"
CONTROLLER_TYPE = "zwave-controller"
"""The device type of the controller's own readings (its home id, as an identifier)."""


@dataclass(frozen=True, slots=True)
class NodeCommand:
    node_id: int
    command: bytes


def parse_application_command(frame: DataFrame) -> NodeCommand | None:
    """The source node and command of an ApplicationCommandHandler (0x04:
    ``rxStatus src len cmd…``) or BridgeApplicationCommand (0xA8: ``rxStatus dst src len cmd…``)
    request; None for other frames. Raises :class:`ZwaveError` when truncated."""
    payload = frame.payload
    if frame.function == FUNC_APPLICATION_COMMAND:
        at = 1
    elif frame.function == FUNC_BRIDGE_COMMAND:
        at = 2
    else:
        return None
    if len(payload) < at + 2:
        raise ZwaveError(f"function 0x{frame.function:02x} payload of {len(payload)} bytes")
    node_id, length = payload[at], payload[at + 1]
    command = payload[at + 2 : at + 2 + length]
    if len(command) != length or length == 0:
        raise ZwaveError(f"command of {len(command)} bytes, header says {length}")
    return NodeCommand(node_id, command)


class ZwaveRunner:
    """A :class:`drivers.reading.Source` for one Z-Wave controller (Serial API over USB).

    Readings: device = the configured node name (``device_type`` from config), or
    ``node-<id>`` / ``zwave-sensor`` for nodes not in config; the controller's home id as an
    ``identifier`` reading (device ``controller``, point ``home_id``) after each start-up.
    S0/S2-encapsulated reports are counted as ``unsupported_secure`` and logged (first per node),
    never silently dropped.
    """

    def __init__(
        self,
        config: ZwaveSource,
        *,
        reopen_min_s: float = REOPEN_MIN_S,
        reopen_max_s: float = REOPEN_MAX_S,
        reset_wait_s: float = 1.5,
        host_options: dict[str, float] | None = None,
        # host_options: ZwaveHost timing (ack_timeout_s, response_timeout_s, retry_base_s, retry_step_s).
    ) -> None:
        self.name = config.name
        self.config = config
        self._nodes = {node.node_id: node for node in config.nodes}
        self._reset_wait_s = reset_wait_s
        self._host_options = host_options or {}
        self._log = get_logger("heatgate.zwave")
        self._port = PortKeeper(
            config.port,
            line_settings("8N1", 115200),
            source=config.name,
            event_prefix="zwave",
            backoff=Backoff(min_s=reopen_min_s, max_s=reopen_max_s),
            log=self._log,
        )
        self.stats = HostStats()
        self.unsupported_secure = 0
        self.unsupported_commands = 0
        self.decode_errors = 0
        self.readings = 0
        self.controller_ready = False
        self.last_report_ts: dict[int, float] = {}
        self._secure_logged: set[int] = set()

    @property
    def port_state(self) -> str:
        return self._port.state

    @property
    def port_losses(self) -> int:
        return self._port.losses

    def health(self) -> dict[str, Any]:
        return {
            "type": "zwave",
            "port": self.config.port,
            "port_state": self.port_state,
            "port_error": self._port.last_error,
            "port_losses": self.port_losses,
            "controller_ready": self.controller_ready,
            **self.stats.as_dict(),
            "unsupported_secure": self.unsupported_secure,
            "unsupported_commands": self.unsupported_commands,
            "decode_errors": self.decode_errors,
            "readings": self.readings,
            "nodes": {
                self._device(node_id)[0]: {"node_id": node_id, "last_report_ts": ts}
                for node_id, ts in sorted(self.last_report_ts.items())
            },
        }

    async def run(self, sink: ReadingSink) -> None:
        await self._port.run(lambda link: self._session_or_restart(link, sink), after_session=self._not_ready)

    async def _session_or_restart(self, link: SerialLink, sink: ReadingSink) -> None:
        try:
            await self._session(link, sink)
        except* ZwaveError as group:
            # The controller did not answer its start-up: close, reopen later, start over.
            self._port.state = "no_controller"
            self._log.warning("zwave.startup_failed", source=self.name, error=str(group.exceptions[0]))

    def _not_ready(self) -> None:
        self.controller_ready = False

    async def _session(self, link: SerialLink, sink: ReadingSink) -> None:
        async def on_request(frame: DataFrame) -> None:
            readings = self._readings(frame)
            if readings:
                self.readings += len(readings)
                await sink(readings)

        host = ZwaveHost(link, on_request, stats=self.stats, **self._host_options)  # type: ignore[arg-type]
        async with asyncio.TaskGroup() as group:
            group.create_task(host.read_loop(), name=f"zwave-read-{self.name}")
            ident = await host.start_up(reset_wait_s=self._reset_wait_s)
            self.controller_ready = True
            self._port.backoff.reset()
            home_id = ident[:4].hex()
            self._log.info("zwave.controller_ready", source=self.name, controller_node=ident[4])
            self.readings += 1
            await sink(
                [
                    Reading(
                        source=self.name,
                        device="controller",
                        device_type=CONTROLLER_TYPE,
                        point="home_id",
                        kind=PointKind.IDENTIFIER,
                        value=home_id,
                        ts=time.time(),
                    )
                ]
            )

    def _device(self, node_id: int) -> tuple[str, str]:
        node = self._nodes.get(node_id)
        if node is None:
            return f"node-{node_id}", UNKNOWN_NODE_TYPE
        return node.name, node.device_type

    def _readings(self, frame: DataFrame) -> list[Reading]:
        try:
            carried = parse_application_command(frame)
            if carried is None:
                return []
            decoded = cc.decode_command(carried.command)
        except ZwaveError as exc:
            self.decode_errors += 1
            self._log.info("zwave.bad_report", source=self.name, function=frame.function, error=str(exc))
            return []
        now = time.time()
        self.last_report_ts[carried.node_id] = now
        if isinstance(decoded, cc.SecureEncapsulated):
            self.unsupported_secure += 1
            first = carried.node_id not in self._secure_logged
            self._secure_logged.add(carried.node_id)
            (self._log.warning if first else self._log.debug)(
                "zwave.unsupported_secure",
                source=self.name,
                node=carried.node_id,
                scheme="S2" if decoded.command_class == cc.SECURITY_S2 else "S0",
                unsupported_secure_count=self.unsupported_secure,
            )
            return []
        if isinstance(decoded, cc.Unsupported):
            self.unsupported_commands += 1
            return []
        device, device_type = self._device(carried.node_id)
        return [
            Reading(
                source=self.name,
                device=device,
                device_type=device_type,
                point=v.point,
                kind=v.kind,
                value=v.value,
                ts=now,
                unit=v.unit,
                text=v.text,
            )
            for v in decoded
        ]
