"""A simulated Z-Wave controller on a pseudo-terminal: ``heatgate sim zwave``.

It answers the host's start-up (soft reset -> SerialApiStarted, GetControllerId -> home id),
and every ``interval_s`` emits reports from simulated nodes: node 2, a multisensor
(temperature, humidity, battery; ApplicationCommandHandler); node 3, an energy switch (meter
kWh and W; BridgeApplicationCommand); node 4, a secure node whose reports are S2-encapsulated.
Faults: ``nak_rate`` / ``can_rate`` answer a host frame with NAK / CAN, ``drop_ack_rate``
leaves it unanswered, ``bad_checksum_rate`` corrupts an emitted frame.

In-process use::

    sim = ZwaveSimulator(link="/tmp/heatgate-sim/zwave")
    path = await sim.start(); ...; sim.unplug(); sim.plug(); await sim.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
from dataclasses import dataclass

from heatgate.drivers.sim.args import rate, run_from_cli, serve_until_cancelled
from heatgate.drivers.sim.ptylink import PtyDevice
from heatgate.drivers.zwave import frames
from heatgate.drivers.zwave.frames import ACK, CAN, NAK, Control, DataFrame, FrameType
from heatgate.drivers.zwave.host import (
    FUNC_APPLICATION_COMMAND,
    FUNC_BRIDGE_COMMAND,
    FUNC_GET_CONTROLLER_ID,
    FUNC_SERIAL_API_STARTED,
    FUNC_SOFT_RESET,
)

__all__ = ["DEFAULT_HOME_ID", "ZwaveSimStats", "ZwaveSimulator", "node_reports", "register_sim", "run_zwave_sim"]

DEFAULT_LINK = "/tmp/heatgate-sim/zwave"
DEFAULT_HOME_ID = bytes.fromhex("e3a1c0de")


@dataclass
class ZwaveSimStats:
    host_frames: int = 0
    naks_sent: int = 0
    cans_sent: int = 0
    acks_dropped: int = 0
    reports_sent: int = 0
    bad_checksums_sent: int = 0
    host_acks: int = 0
    host_naks: int = 0
    resets: int = 0


def _app_command(node: int, command: bytes) -> DataFrame:
    return DataFrame(FrameType.REQUEST, FUNC_APPLICATION_COMMAND, bytes([0x00, node, len(command)]) + command)


def _bridge_command(node: int, command: bytes) -> DataFrame:
    payload = bytes([0x00, 0x01, node, len(command)]) + command + b"\x00"  # rx status, dst, src, len, cmd, mask
    return DataFrame(FrameType.REQUEST, FUNC_BRIDGE_COMMAND, payload)


def node_reports(tick: int) -> list[DataFrame]:
    """The frames of one reporting round (pure; ``tick`` varies the values)."""
    temp_c10 = 205 + tick % 10  # 20.5 °C upwards, precision 1, 2 bytes
    energy_kwh100 = 123456 + tick  # 1234.56 kWh, precision 2, 4 bytes
    return [
        _app_command(2, bytes([0x31, 0x05, 0x01, 0x22]) + temp_c10.to_bytes(2, "big", signed=True)),
        _app_command(2, bytes([0x31, 0x05, 0x05, 0x01, 40 + tick % 5])),
        _app_command(2, bytes([0x80, 0x03, 90])),
        _bridge_command(3, bytes([0x32, 0x02, 0x21, 0x44]) + energy_kwh100.to_bytes(4, "big") + b"\x00\x00"),
        _bridge_command(
            3, bytes([0x32, 0x02, 0x21, 0x52, (1500 + tick) >> 8 & 0xFF, (1500 + tick) & 0xFF, 0x00, 0x00])
        ),
        _app_command(4, bytes([0x9F, 0x03, tick & 0xFF, 0x00]) + os.urandom(12)),
    ]


class ZwaveSimulator:
    """A controller speaking the Serial API on the master side of a pseudo-terminal."""

    def __init__(
        self,
        *,
        link: str | os.PathLike[str] | None = DEFAULT_LINK,
        interval_s: float = 1.0,
        home_id: bytes = DEFAULT_HOME_ID,
        nak_rate: float = 0.0,
        can_rate: float = 0.0,
        drop_ack_rate: float = 0.0,
        bad_checksum_rate: float = 0.0,
        seed: int | None = None,
    ) -> None:
        self.interval_s = interval_s
        self.home_id = home_id
        self.nak_rate = nak_rate
        self.can_rate = can_rate
        self.drop_ack_rate = drop_ack_rate
        self.bad_checksum_rate = bad_checksum_rate
        self.stats = ZwaveSimStats()
        self.pty = PtyDevice(link)
        self._rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []
        self._buffer = bytearray()
        self._reporting = asyncio.Event()

    @property
    def path(self) -> str:
        return self.pty.slave_path

    async def start(self) -> str:
        path = self.plug()
        self._tasks.append(asyncio.create_task(self._report_loop(), name="zwave-sim-reports"))
        return path

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self.unplug()

    def plug(self) -> str:
        path = self.pty.plug()
        self._buffer.clear()
        asyncio.get_running_loop().add_reader(self.pty.master_fd, self._on_readable)
        return path

    def unplug(self) -> None:
        if self.pty.plugged:
            asyncio.get_running_loop().remove_reader(self.pty.master_fd)
        self._reporting.clear()
        self.pty.unplug()

    def _on_readable(self) -> None:
        try:
            data = os.read(self.pty.master_fd, 4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""  # no slave open (EIO): nothing to read yet
        if not data:
            return
        self._buffer += data
        while self._buffer:
            try:
                consumed, frame = frames.decode(self._buffer)
            except frames.ZwaveChecksumError as exc:
                del self._buffer[: exc.consumed]
                self._send(bytes([NAK]))
                continue
            if consumed == 0:
                break
            del self._buffer[:consumed]
            if isinstance(frame, Control):
                if frame is Control.ACK:
                    self.stats.host_acks += 1
                elif frame is Control.NAK:
                    self.stats.host_naks += 1
            elif isinstance(frame, DataFrame):
                self._on_host_frame(frame)

    def _on_host_frame(self, frame: DataFrame) -> None:
        self.stats.host_frames += 1
        draw = self._rng.random()
        if draw < self.drop_ack_rate:
            self.stats.acks_dropped += 1
            return
        draw -= self.drop_ack_rate
        if draw < self.nak_rate:
            self.stats.naks_sent += 1
            self._send(bytes([NAK]))
            return
        draw -= self.nak_rate
        if draw < self.can_rate:
            self.stats.cans_sent += 1
            self._send(bytes([CAN]))
            return
        self._send(bytes([ACK]))
        if frame.function == FUNC_SOFT_RESET:
            self.stats.resets += 1
            self._reporting.clear()
            asyncio.get_running_loop().call_later(
                0.05, self._send_frame, DataFrame(FrameType.REQUEST, FUNC_SERIAL_API_STARTED, b"\x00\x00")
            )
        elif frame.function == FUNC_GET_CONTROLLER_ID:
            self._send_frame(DataFrame(FrameType.RESPONSE, FUNC_GET_CONTROLLER_ID, self.home_id + b"\x01"))
            self._reporting.set()

    def _send_frame(self, frame: DataFrame, *, corrupt: bool = False) -> None:
        data = frames.encode(frame)
        if corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        self._send(data)

    def _send(self, data: bytes) -> None:
        self.pty.write_nowait(data)

    async def _report_loop(self) -> None:
        tick = 0
        while True:
            await self._reporting.wait()
            for frame in node_reports(tick):
                corrupt = self._rng.random() < self.bad_checksum_rate
                self.stats.bad_checksums_sent += corrupt
                self._send_frame(frame, corrupt=corrupt)
                self.stats.reports_sent += 1
                await asyncio.sleep(0.005)  # a controller sends one frame at a time
            tick += 1
            await asyncio.sleep(self.interval_s)


async def run_zwave_sim(
    *,
    link: str | None = DEFAULT_LINK,
    interval_s: float = 1.0,
    nak_rate: float = 0.0,
    can_rate: float = 0.0,
    drop_ack_rate: float = 0.0,
    ready: asyncio.Future[str] | None = None,
) -> None:
    """Run a simulated controller until cancelled; ``ready`` receives the pty path."""
    sim = ZwaveSimulator(
        link=link, interval_s=interval_s, nak_rate=nak_rate, can_rate=can_rate, drop_ack_rate=drop_ack_rate
    )
    await serve_until_cancelled(sim.start, sim.stop, ready)


def register_sim(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "zwave",
        help="a Z-Wave controller (Serial API) with simulated nodes on a pseudo-terminal",
        description="Plays a Z-Wave USB controller: answers the host's start-up and emits reports from "
        "node 2 (multisensor), node 3 (energy switch) and node 4 (S2-secured). Prints the pty path.",
    )
    parser.add_argument("--link", default=DEFAULT_LINK, help=f"symlink to the pty (default {DEFAULT_LINK})")
    parser.add_argument("--interval-s", type=float, default=1.0, help="seconds between report rounds")
    parser.add_argument("--nak-rate", type=rate, default=0.0, help="share of host frames answered with NAK")
    parser.add_argument("--can-rate", type=rate, default=0.0, help="share of host frames answered with CAN")
    parser.add_argument("--drop-ack-rate", type=rate, default=0.0, help="share of host frames left unanswered")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    return run_from_cli(
        lambda ready: run_zwave_sim(
            link=args.link,
            interval_s=args.interval_s,
            nak_rate=args.nak_rate,
            can_rate=args.can_rate,
            drop_ack_rate=args.drop_ack_rate,
            ready=ready,
        ),
        lambda path: f"zwave controller simulator on {path}, linked at {args.link}",
    )
