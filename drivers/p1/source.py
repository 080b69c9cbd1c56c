"""The P1 source: owns the serial port, frames telegrams, emits readings, survives unplugging."""

from __future__ import annotations

import time
from typing import Any

from heatgate.backoff import Backoff
from heatgate.drivers.p1 import framer
from heatgate.drivers.p1.errors import P1ChecksumError, P1ParseError
from heatgate.drivers.p1.settings import P1Source
from heatgate.drivers.p1.telegram import P1Decoder
from heatgate.drivers.reading import ReadingSink
from heatgate.drivers.serialport import REOPEN_MAX_S, REOPEN_MIN_S, LineSettings, PortKeeper, SerialLink, line_settings
from heatgate.logs import get_logger

__all__ = ["P1Runner", "serial_settings_for"]


def serial_settings_for(config: P1Source) -> LineSettings:
    """DSMR 2.2/3: 9600 baud 7E1; DSMR 4/5: 115200 baud 8N1; ``serial_settings`` overrides the framing."""
    old = config.dsmr_version in ("2.2", "3")
    spec = config.serial_settings or ("7E1" if old else "8N1")
    return line_settings(spec, 9600 if old else 115200)


class P1Runner:
    """A :class:`drivers.reading.Source` for one P1 port.

    Readings: device ``meter`` (``smart-meter``) with energy counters, power, per-phase values,
    failure counts, ``tariff`` and the ``equipment_id`` identifier; device ``gas``
    (``gas-meter``, timestamped by the M-Bus reading) with ``gas_delivered_m3`` and
    ``gas_equipment_id``. A bad telegram is counted and dropped. When the port goes away,
    :meth:`run` logs it once, reopens with backoff capped at ``REOPEN_MAX_S`` and logs the return once.
    """

    def __init__(
        self, config: P1Source, *, reopen_min_s: float = REOPEN_MIN_S, reopen_max_s: float = REOPEN_MAX_S
    ) -> None:
        self.name = config.name
        self.config = config
        self._settings = serial_settings_for(config)
        self._decoder = P1Decoder(config.dsmr_version, source=config.name)
        self._log = get_logger("heatgate.p1")
        self._port = PortKeeper(
            config.port,
            self._settings,
            source=config.name,
            event_prefix="p1",
            backoff=Backoff(min_s=reopen_min_s, max_s=reopen_max_s),
            log=self._log,
        )
        self.telegrams_ok = 0
        self.crc_errors = 0
        self.parse_errors = 0
        self.garbage_bytes = 0
        self.readings = 0
        self.last_telegram_ts: float | None = None

    @property
    def port_state(self) -> str:
        return self._port.state

    @property
    def port_losses(self) -> int:
        return self._port.losses

    def health(self) -> dict[str, Any]:
        return {
            "type": "p1",
            "port": self.config.port,
            "dsmr_version": self.config.dsmr_version,
            "port_state": self.port_state,
            "port_error": self._port.last_error,
            "telegrams_ok": self.telegrams_ok,
            "crc_errors": self.crc_errors,
            "parse_errors": self.parse_errors,
            "garbage_bytes": self.garbage_bytes,
            "readings": self.readings,
            "port_losses": self.port_losses,
            "last_telegram_ts": self.last_telegram_ts,
        }

    async def run(self, sink: ReadingSink) -> None:
        await self._port.run(lambda link: self._read(link, sink))

    async def _read(self, link: SerialLink, sink: ReadingSink) -> None:
        buffer = bytearray()
        while True:
            buffer += await link.read()
            while buffer:
                consumed, frame = framer.decode(buffer)
                if consumed == 0:
                    break
                del buffer[:consumed]
                if frame is None:
                    self.garbage_bytes += consumed
                    continue
                await self._telegram(frame, sink)

    async def _telegram(self, frame: bytes, sink: ReadingSink) -> None:
        try:
            readings = self._decoder.decode(frame, received_ts=time.time())
        except P1ChecksumError:
            self.crc_errors += 1
            self._log.info("p1.checksum_error", source=self.name, crc_errors_count=self.crc_errors)
            return
        except P1ParseError as exc:
            self.parse_errors += 1
            self._log.warning(
                "p1.telegram_rejected",
                source=self.name,
                error_type=type(exc.__cause__).__name__,
                parse_errors_count=self.parse_errors,
            )
            return
        self.telegrams_ok += 1
        self._port.backoff.reset()
        self.last_telegram_ts = time.time()
        self.readings += len(readings)
        if readings:
            await sink(readings)
