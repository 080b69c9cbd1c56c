"""Simulated Modbus devices on real pymodbus servers: ``heatgate sim heatpump|meter``.

In-process use (tests, ``heatgate demo``)::

    server = await serve_heatpump_tcp("127.0.0.1", 0, faults=FaultPlan(drop_rate=0.1))
    server.port                                   # where it listens
    server.device(1).current("flow_setpoint_c")   # read a setpoint back from the simulator
    await server.stop()

    server = await serve_meter_rtu(link="/tmp/heatgate-sim/meter", baudrate=9600)
    server.path                                   # the pty the driver opens (the link points at it)

Several units on one bus: ``await serve_tcp({1: heatpump_device(), 2: meter_device()}, ...)``
or ``serve_rtu(...)``; set ``server.device(2).offline = True`` to kill one.

RTU runs pymodbus's serial server on one pseudo-terminal and the driver's end on a second
one; the simulator relays bytes between the two masters, as a USB-RS485 pair on one bus would.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import tty
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pymodbus import FramerType
from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from heatgate.drivers.sim.args import rate
from heatgate.drivers.sim.modbus_model import (
    FaultPlan,
    RegisterImageDevice,
    SimDevice,
    heatpump_device,
    meter_device,
)

AnyDevice = SimDevice | RegisterImageDevice

__all__ = [
    "FaultPlan",
    "SimContext",
    "SimServer",
    "register_sim",
    "serve_heatpump_rtu",
    "serve_heatpump_tcp",
    "serve_meter_rtu",
    "serve_meter_tcp",
    "serve_rtu",
    "serve_rtu_over_tcp",
    "serve_tcp",
]

_TABLE_BY_FC = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding", 4: "input"}


class SimContext(ModbusServerContext):
    """The datastore pymodbus's server asks: our devices, their models and their faults."""

    def __init__(self, devices: Mapping[int, AnyDevice], *, seed: int | None = None) -> None:
        # Deliberately not calling super().__init__: pymodbus hands requests to a context with
        # ``old_simulator`` set straight to async_getValues/async_setValues.
        self.devices = dict(devices)
        self.old_simulator = True
        self.simdevices = []
        self.rng = random.Random(seed)
        self.requests = 0

    def device_ids(self) -> list[int]:
        return list(self.devices)

    async def _gate(self, device_id: int) -> AnyDevice:
        self.requests += 1
        device = self.devices.get(device_id)
        if device is None or device.is_offline():
            raise NoSuchIdException(f"no device {device_id}")  # the server stays silent
        faults = device.faults
        if faults.drop_rate and self.rng.random() < faults.drop_rate:
            raise NoSuchIdException(f"dropped request to {device_id}")
        if faults.delay_ms:
            await asyncio.sleep(faults.delay_ms / 1000.0)
        return device

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        device = await self._gate(device_id)
        if device.faults.exception_rate and self.rng.random() < device.faults.exception_rate:
            return ExcCodes.DEVICE_FAILURE
        table = _TABLE_BY_FC.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        if isinstance(device, RegisterImageDevice):
            if device.drops(table, address, count):
                raise NoSuchIdException(f"device {device_id} drops reads of {table} {address}+{count}")
            code = device.refusal(table, address, count)
            if code is not None:
                return ExcCodes.ILLEGAL_VALUE if code == 3 else ExcCodes.ILLEGAL_ADDRESS
        elif not device.readable(table, address, count):
            return ExcCodes.ILLEGAL_ADDRESS
        image = device.image(table)
        if table in ("coil", "discrete"):
            return [bool(image.get(a, 0)) for a in range(address, address + count)]
        return [image.get(a, 0) for a in range(address, address + count)]

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        device = await self._gate(device_id)
        table = _TABLE_BY_FC.get(func_code)
        if table not in ("holding", "coil"):
            return ExcCodes.ILLEGAL_FUNCTION
        if not device.write(table, address, [int(v) for v in values]):
            return ExcCodes.ILLEGAL_VALUE
        return None


class _PtyRelay:
    """Two pseudo-terminals whose masters are joined: the server opens one slave, the driver
    the other (by its path, or the symlink at ``link``)."""

    def __init__(self, link: str | None) -> None:
        self.link = Path(link) if link else None
        self._fds: list[int] = []
        self.server_path = self.client_path = ""
        self._masters: tuple[int, int] = (-1, -1)

    def open(self) -> None:
        m1, s1 = os.openpty()
        m2, s2 = os.openpty()
        for fd in (s1, s2):
            tty.setraw(fd)
        for fd in (m1, m2):
            os.set_blocking(fd, False)
        self._fds = [m1, s1, m2, s2]
        self._masters = (m1, m2)
        self.server_path, self.client_path = os.ttyname(s1), os.ttyname(s2)
        loop = asyncio.get_running_loop()
        loop.add_reader(m1, self._copy, m1, m2)
        loop.add_reader(m2, self._copy, m2, m1)
        if self.link is not None:
            self.link.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.link.with_name(f".{self.link.name}.{os.getpid()}")
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(self.client_path)
            tmp.replace(self.link)

    @staticmethod
    def _copy(src: int, dst: int) -> None:
        try:
            data = os.read(src, 4096)
        except (BlockingIOError, OSError):
            return
        try:
            os.write(dst, data)
        except (BlockingIOError, OSError):
            pass  # a bus drops what nobody listens to

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for fd in self._masters:
            if fd >= 0:
                loop.remove_reader(fd)
        if self.link is not None and self.link.is_symlink() and os.readlink(self.link) == self.client_path:
            self.link.unlink(missing_ok=True)
        for fd in self._fds:
            os.close(fd)
        self._fds = []
        self._masters = (-1, -1)


class SimServer:
    """A running simulated bus or host. ``port`` (TCP) or ``path`` (RTU) says where."""

    def __init__(
        self, server: Any, context: SimContext, *, host: str = "", port: int = 0, relay: _PtyRelay | None = None
    ) -> None:
        self._server = server
        self.context = context
        self.host = host
        self.port = port
        self._relay = relay
        self.framing = "rtu" if relay is not None else "tcp"

    @property
    def path(self) -> str:
        """The pseudo-terminal the driver opens (RTU only)."""
        return self._relay.client_path if self._relay else ""

    def device(self, unit_id: int) -> SimDevice:
        device = self.context.devices[unit_id]
        assert isinstance(device, SimDevice)
        return device

    def image_device(self, unit_id: int) -> RegisterImageDevice:
        device = self.context.devices[unit_id]
        assert isinstance(device, RegisterImageDevice)
        return device

    @property
    def where(self) -> str:
        if self._relay is not None:
            link = f", linked at {self._relay.link}" if self._relay.link else ""
            return f"Modbus RTU on {self.path}{link}"
        if self.framing == "rtu-over-tcp":
            return f"Modbus RTU over TCP on {self.host}:{self.port}"
        return f"Modbus TCP on {self.host}:{self.port}"

    async def stop(self) -> None:
        await self._server.shutdown()
        if self._relay is not None:
            self._relay.close()
            self._relay = None


async def serve_tcp(
    devices: Mapping[int, AnyDevice],
    host: str = "127.0.0.1",
    port: int = 5020,
    *,
    seed: int | None = None,
    framer: FramerType = FramerType.SOCKET,
) -> SimServer:
    """Serve ``devices`` (by unit id) over Modbus TCP; port 0 picks a free port.
    ``framer=FramerType.RTU`` serves RTU frames over the socket (see :func:`serve_rtu_over_tcp`)."""
    context = SimContext(devices, seed=seed)
    server = ModbusTcpServer(context, address=(host, port), ignore_missing_devices=True, framer=framer)
    await server.serve_forever(background=True)
    actual = port
    transport = server.transport
    if transport is not None:
        sockets = getattr(transport, "sockets", None)
        if sockets:
            actual = sockets[0].getsockname()[1]
    return SimServer(server, context, host=host, port=actual)


async def serve_rtu_over_tcp(devices: Mapping[int, AnyDevice], host: str = "127.0.0.1", port: int = 0) -> SimServer:
    """Serve ``devices`` as a serial-to-Ethernet converter in transparent mode would: RTU frames
    (with CRC, no MBAP header) on a TCP socket."""
    server = await serve_tcp(devices, host, port, framer=FramerType.RTU)
    server.framing = "rtu-over-tcp"
    return server


async def serve_rtu(
    devices: Mapping[int, AnyDevice],
    *,
    link: str | None = None,
    baudrate: int = 9600,
    parity: str = "N",
    stopbits: int = 1,
    seed: int | None = None,
) -> SimServer:
    """Serve ``devices`` over Modbus RTU on a pseudo-terminal; ``server.path`` is the driver's end."""
    relay = _PtyRelay(link)
    relay.open()
    context = SimContext(devices, seed=seed)
    try:
        server = ModbusSerialServer(
            context,
            port=relay.server_path,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            ignore_missing_devices=True,
        )
        await server.serve_forever(background=True)
    except BaseException:
        relay.close()
        raise
    return SimServer(server, context, relay=relay)


async def serve_heatpump_tcp(
    host: str = "127.0.0.1", port: int = 5020, *, faults: FaultPlan | None = None, unit_id: int = 1
) -> SimServer:
    return await serve_tcp({unit_id: heatpump_device(faults)}, host, port)


async def serve_heatpump_rtu(
    *, link: str | None = None, baudrate: int = 9600, faults: FaultPlan | None = None, unit_id: int = 1
) -> SimServer:
    return await serve_rtu({unit_id: heatpump_device(faults)}, link=link, baudrate=baudrate)


async def serve_meter_tcp(
    host: str = "127.0.0.1", port: int = 5021, *, faults: FaultPlan | None = None, unit_id: int = 1
) -> SimServer:
    return await serve_tcp({unit_id: meter_device(faults)}, host, port)


async def serve_meter_rtu(
    *, link: str | None = None, baudrate: int = 9600, faults: FaultPlan | None = None, unit_id: int = 1
) -> SimServer:
    return await serve_rtu({unit_id: meter_device(faults)}, link=link, baudrate=baudrate)


# -- the command line -------------------------------------------------------------------------


def _fault(text: str) -> tuple[int, float]:
    code, sep, at = text.partition("@")
    try:
        return int(code, 0), float(at) if sep else 0.0
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected CODE@SECONDS (e.g. 101@30), got {text!r}") from None


def _add_common(parser: argparse.ArgumentParser, *, port: int, link: str, rtu_default: bool) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="TCP address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=port, help=f"TCP port (default {port})")
    parser.add_argument(
        "--rtu", action="store_true", default=rtu_default, help="serve Modbus RTU on a pseudo-terminal instead of TCP"
    )
    parser.add_argument(
        "--rtu-over-tcp",
        action="store_true",
        help="serve RTU frames on the TCP port, as a serial-to-Ethernet converter does",
    )
    parser.add_argument("--link", default=link, help=f"RTU: symlink to the pty (default {link})")
    parser.add_argument("--baud", type=int, default=9600, help="RTU: baud rate (default 9600)")
    parser.add_argument("--unit", type=int, default=1, help="unit id (default 1)")
    parser.add_argument(
        "--fault", type=_fault, metavar="CODE@SECONDS", help="set fault code CODE after SECONDS (e.g. 101@30)"
    )
    parser.add_argument("--clear-after", type=float, metavar="S", help="clear the fault S seconds after it is set")
    parser.add_argument("--drop-rate", type=rate, default=0.0, help="share of requests left unanswered")
    parser.add_argument("--delay-ms", type=float, default=0.0, help="delay every answer by MS milliseconds")
    parser.add_argument(
        "--exception-rate", type=rate, default=0.0, help="share of requests answered with a 'device failure' exception"
    )
    parser.add_argument("--offline-after", type=float, metavar="S", help="stop answering after S seconds")


def register_sim(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    hp = subparsers.add_parser(
        "heatpump",
        help="a Modbus heat pump (TCP 127.0.0.1:5020, or RTU on a pty)",
        description="A simulated air-to-water heat pump serving the sim-heatpump profile over Modbus TCP "
        "(default 127.0.0.1:5020) or RTU on a pseudo-terminal (--rtu).",
    )
    _add_common(hp, port=5020, link="/tmp/heatgate-sim/heatpump", rtu_default=False)
    hp.set_defaults(handler=_main, sim_kind="heatpump")
    meter = subparsers.add_parser(
        "meter",
        help="an SDM630-like energy meter (TCP 127.0.0.1:5021, or --rtu on /tmp/heatgate-sim/meter)",
        description="A simulated three-phase energy meter serving the sdm630 profile over Modbus TCP "
        "(default 127.0.0.1:5021) or RTU on a pseudo-terminal (--rtu, linked at /tmp/heatgate-sim/meter).",
    )
    _add_common(meter, port=5021, link="/tmp/heatgate-sim/meter", rtu_default=False)
    meter.set_defaults(handler=_main, sim_kind="meter")


def _plan_from_args(args: argparse.Namespace) -> FaultPlan:
    code, at = args.fault if args.fault else (None, 0.0)
    return FaultPlan(
        fault_code=code,
        fault_at_s=at,
        clear_after_s=args.clear_after,
        drop_rate=args.drop_rate,
        delay_ms=args.delay_ms,
        exception_rate=args.exception_rate,
        offline_after_s=args.offline_after,
    )


def _main(args: argparse.Namespace) -> int:
    return asyncio.run(_serve(args))


async def _serve(args: argparse.Namespace) -> int:
    plan = _plan_from_args(args)
    device = heatpump_device(plan) if args.sim_kind == "heatpump" else meter_device(plan)
    try:
        if args.rtu:
            server = await serve_rtu({args.unit: device}, link=args.link, baudrate=args.baud)
        elif args.rtu_over_tcp:
            server = await serve_tcp({args.unit: device}, args.host, args.port, framer=FramerType.RTU)
            server.framing = "rtu-over-tcp"
        else:
            server = await serve_tcp({args.unit: device}, args.host, args.port)
    except (OSError, RuntimeError) as exc:
        print(f"heatgate sim {args.sim_kind}: cannot start: {exc}", flush=True)
        return 1
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print(
        f"{args.sim_kind} simulator ({device.profile.model}, profile {device.profile.name}, unit {args.unit}) "
        f"serving {server.where}",
        flush=True,
    )
    try:
        await stop.wait()
    finally:
        await server.stop()
    return 0
