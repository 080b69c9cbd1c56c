"""A Modbus device served from a fixed raw register image, with the device's read limits.

The other simulators encode their registers through a profile; this one does not know any
profile. It serves words exactly as given (transcribed from a vendor's register table), so a
profile polled against it is checked against the reference, not against itself::

    image = RegisterImage(words={"input": {0: 0x4366, 1: 0x0000}}, max_registers_per_request=80)
    server = await serve_image_tcp({1: image})
    ...
    await server.stop()

Limits, as a real device enforces them: a read of more than ``max_registers_per_request``
registers is answered with exception 3 (illegal data value); with ``unmapped_is_error`` a read
that touches any address not in the image is answered with exception 2 (illegal data address).
Every request is recorded in ``RegisterImage.requests`` so that tests can see what was asked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.exceptions import NoSuchIdException
from pymodbus.server import ModbusTcpServer

__all__ = ["ImageRequest", "ImageServer", "RegisterImage", "serve_image_tcp"]

_TABLE_BY_FC = {1: "coil", 2: "discrete", 3: "holding", 4: "input"}
_BIT_TABLES = ("coil", "discrete")


@dataclass(frozen=True, slots=True)
class ImageRequest:
    """One read the device received, and the exception code it answered (0: data)."""

    table: str
    start: int
    count: int
    exception_code: int


@dataclass
class RegisterImage:
    """Raw words (or bits) by table and address, and the limits the device enforces."""

    words: dict[str, dict[int, int]]
    max_registers_per_request: int | None = None
    """Reads of more registers than this get exception 3 (bit tables are not limited)."""
    unmapped_is_error: bool = False
    """Reads that touch an address absent from ``words`` get exception 2 (else they read ``fill_word``)."""
    fill_word: int = 0
    """What a register absent from ``words`` reads as, when that is not an error."""
    requests: list[ImageRequest] = field(default_factory=list)

    def answer(self, table: str, start: int, count: int) -> list[int] | list[bool] | ExcCodes:
        """What the device answers to a read; the request is recorded."""
        code = self._refusal(table, start, count)
        self.requests.append(ImageRequest(table, start, count, int(code) if code is not None else 0))
        if code is not None:
            return code
        values = self.words.get(table, {})
        if table in _BIT_TABLES:
            return [bool(values.get(a, 0)) for a in range(start, start + count)]
        return [values.get(a, self.fill_word) for a in range(start, start + count)]

    def _refusal(self, table: str, start: int, count: int) -> ExcCodes | None:
        limit = self.max_registers_per_request
        if table not in _BIT_TABLES and limit is not None and count > limit:
            return ExcCodes.ILLEGAL_VALUE
        if self.unmapped_is_error:
            values = self.words.get(table, {})
            if any(a not in values for a in range(start, start + count)):
                return ExcCodes.ILLEGAL_ADDRESS
        return None


class _ImageContext(ModbusServerContext):
    """The datastore pymodbus asks: register images by unit id, read-only."""

    def __init__(self, images: dict[int, RegisterImage]) -> None:
        # Not calling super().__init__: with ``old_simulator`` set, pymodbus hands requests
        # straight to async_getValues/async_setValues (as drivers.sim.modbus.SimContext does).
        self.images = images
        self.old_simulator = True
        self.simdevices = []

    def device_ids(self) -> list[int]:
        return list(self.images)

    def _image(self, device_id: int) -> RegisterImage:
        image = self.images.get(device_id)
        if image is None:
            raise NoSuchIdException(f"no device {device_id}")  # the server stays silent
        return image

    async def async_getValues(
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        image = self._image(device_id)
        table = _TABLE_BY_FC.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        return image.answer(table, address, count)

    async def async_setValues(
        self, device_id: int, func_code: int, address: int, values: Sequence[int] | Sequence[bool]
    ) -> ExcCodes | None:
        self._image(device_id)
        return ExcCodes.ILLEGAL_FUNCTION  # a reference image is read-only


class ImageServer:
    """A running image server; ``port`` says where it listens."""

    def __init__(self, server: ModbusTcpServer, context: _ImageContext, port: int) -> None:
        self._server = server
        self.context = context
        self.port = port

    def image(self, unit_id: int) -> RegisterImage:
        return self.context.images[unit_id]

    async def stop(self) -> None:
        await self._server.shutdown()


async def serve_image_tcp(images: dict[int, RegisterImage], host: str = "127.0.0.1", port: int = 0) -> ImageServer:
    """Serve ``images`` (by unit id) over Modbus TCP; port 0 picks a free port."""
    context = _ImageContext(images)
    server = ModbusTcpServer(context, address=(host, port), ignore_missing_devices=True)
    await server.serve_forever(background=True)
    actual = port
    sockets = getattr(server.transport, "sockets", None) if server.transport is not None else None
    if sockets:
        actual = sockets[0].getsockname()[1]
    return ImageServer(server, context, actual)
