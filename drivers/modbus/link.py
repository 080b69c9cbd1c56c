"""The one adapter around pymodbus's async clients: one connection, one request at a time.

A :class:`ModbusLink` owns a client for one TCP host, one serial port, or one TCP socket that
carries RTU frames (a serial-to-Ethernet converter in transparent mode). Every request goes
through :meth:`ModbusLink.request`, which holds the link's lock (so a bus carries one frame at
a time), keeps the RTU inter-frame silence, applies the caller's timeout to that request and
turns pymodbus's results into values or this package's errors. pymodbus's own retries and
background reconnects are off: the scheduler decides when to retry and when to reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any

from pymodbus import FramerType
from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from heatgate.drivers.modbus.errors import ModbusCommError, ModbusExceptionResponse, ModbusTimeout

__all__ = ["ModbusLink", "rtu_silence_s"]

# pymodbus logs every timeout at error level with hex dumps; on a bus with a dead slave (or a
# scan) that is noise. Our own log says once when a device or link goes and comes back.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)


def rtu_silence_s(baudrate: int) -> float:
    """The 3.5-character silence between RTU frames (fixed 1.75 ms above 19200 baud)."""
    return 3.5 * 11 / baudrate if baudrate <= 19200 else 0.00175


class ModbusLink:
    """One pymodbus client (TCP or RTU), serialised."""

    def __init__(
        self, client: AsyncModbusTcpClient | AsyncModbusSerialClient, *, label: str, silence_s: float = 0.0
    ) -> None:
        self._client = client
        self.label = label
        self.silence_s = silence_s
        self.lock = asyncio.Lock()
        self._last_io = 0.0

    @classmethod
    def tcp(cls, host: str, port: int, *, timeout_s: float) -> ModbusLink:
        client = AsyncModbusTcpClient(host, port=port, timeout=timeout_s, retries=0, reconnect_delay=0)
        return cls(client, label=f"{host}:{port}")

    @classmethod
    def rtu_over_tcp(cls, host: str, port: int, *, timeout_s: float) -> ModbusLink:
        """RTU framing (address, PDU, CRC) on a TCP socket: what a serial-to-Ethernet converter
        passes through to the RS-485 side. The converter keeps the bus timing."""
        client = AsyncModbusTcpClient(
            host, port=port, framer=FramerType.RTU, timeout=timeout_s, retries=0, reconnect_delay=0
        )
        return cls(client, label=f"rtu://{host}:{port}")

    @classmethod
    def rtu(cls, port: str, *, baudrate: int, parity: str = "N", stopbits: int = 1, timeout_s: float) -> ModbusLink:
        client = AsyncModbusSerialClient(
            port,
            baudrate=baudrate,
            parity=parity,
            stopbits=stopbits,
            bytesize=8,
            timeout=timeout_s,
            retries=0,
            reconnect_delay=0,
        )
        return cls(client, label=port, silence_s=rtu_silence_s(baudrate))

    @property
    def connected(self) -> bool:
        return bool(self._client.connected)

    async def _ensure_connected(self, timeout_s: float) -> None:
        if self._client.connected:
            return
        self._set_timeout(timeout_s)
        try:
            ok = await self._client.connect()
        except (OSError, ModbusException) as exc:
            raise ModbusCommError(f"cannot connect to {self.label}: {exc}") from None
        if not ok:
            raise ModbusCommError(f"cannot connect to {self.label}")

    def _set_timeout(self, timeout_s: float) -> None:
        # pymodbus reads the per-request timeout from its comm params at each request.
        self._client.comm_params.timeout_connect = timeout_s
        self._client.ctx.comm_params.timeout_connect = timeout_s
        # pymodbus closes a TCP connection after a few unanswered requests in a row; behind a
        # TCP gateway that would punish every unit for one dead one. Our scheduler decides.
        self._client.ctx.count_until_disconnect = self._client.ctx.max_until_disconnect

    async def request(
        self,
        op: str,
        address: int,
        *,
        unit_id: int,
        timeout_s: float,
        count: int = 1,
        values: Sequence[int] | None = None,
    ) -> list[int] | list[bool]:
        """Run one request: ``op`` is ``holding``/``input``/``coil``/``discrete`` (reads) or
        ``write_registers``/``write_coil``. Returns the registers or bits read (empty for writes)."""
        async with self.lock:
            await self._ensure_connected(timeout_s)
            if self.silence_s:
                wait_s = self._last_io + self.silence_s - time.monotonic()
                if wait_s > 0:
                    await asyncio.sleep(wait_s)
            self._set_timeout(timeout_s)
            try:
                response = await self._call(op, address, count, unit_id, values)
            except ModbusIOException as exc:
                raise ModbusTimeout(f"no answer from unit {unit_id} on {self.label}", unit_id=unit_id) from exc
            except ConnectionException as exc:
                raise ModbusCommError(f"{self.label}: {exc}") from None
            except ModbusException as exc:
                raise ModbusCommError(f"{self.label}: {exc}") from None
            finally:
                self._last_io = time.monotonic()
        if response.isError():
            code = int(getattr(response, "exception_code", 0))
            raise ModbusExceptionResponse(f"unit {unit_id} answered exception {code}", code=code)
        if op in ("coil", "discrete"):
            return list(response.bits[:count])
        if op in ("holding", "input"):
            registers: list[int] = list(response.registers)
            if len(registers) != count:
                raise ModbusCommError(f"unit {unit_id} sent {len(registers)} registers, asked {count}")
            return registers
        return []

    async def _call(self, op: str, address: int, count: int, unit_id: int, values: Sequence[int] | None) -> Any:
        c = self._client
        if op == "holding":
            return await c.read_holding_registers(address, count=count, device_id=unit_id)
        if op == "input":
            return await c.read_input_registers(address, count=count, device_id=unit_id)
        if op == "coil":
            return await c.read_coils(address, count=count, device_id=unit_id)
        if op == "discrete":
            return await c.read_discrete_inputs(address, count=count, device_id=unit_id)
        if op == "write_registers":
            assert values is not None
            if len(values) == 1:
                return await c.write_register(address, values[0], device_id=unit_id)
            return await c.write_registers(address, list(values), device_id=unit_id)
        if op == "write_coil":
            assert values is not None
            return await c.write_coil(address, bool(values[0]), device_id=unit_id)
        raise ValueError(f"unknown operation {op!r}")

    def close(self) -> None:
        self._client.close()
