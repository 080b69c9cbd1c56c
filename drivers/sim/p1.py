"""A simulated DSMR smart meter on a pseudo-terminal: ``heatgate sim p1``.

In-process use (tests, ``heatgate demo``)::

    sim = P1Simulator(dsmr_version="5", interval_s=1.0, link="/tmp/heatgate-sim/p1")
    path = await sim.start()      # the pty's slave path; the link points at it
    ...
    sim.unplug(); sim.plug()       # pull and reinsert the "USB cable"
    await sim.stop()
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
from dataclasses import dataclass

from heatgate.drivers.sim.args import rate, run_from_cli, serve_until_cancelled
from heatgate.drivers.sim.p1_telegram import MeterState, build_telegram
from heatgate.drivers.sim.ptylink import PtyDevice

__all__ = ["P1SimStats", "P1Simulator", "register_sim", "run_p1_sim"]

DEFAULT_LINK = "/tmp/heatgate-sim/p1"
_GARBAGE = b"\x00\xff~garbage\x7f/!\r\n"


@dataclass
class P1SimStats:
    telegrams_sent: int = 0
    bad_crc_sent: int = 0
    garbage_bursts: int = 0
    bytes_dropped: int = 0


class P1Simulator:
    """Writes a telegram every ``interval_s`` onto a pseudo-terminal, with injected faults.

    ``bad_crc_rate``: share of telegrams sent with a wrong CRC (DSMR 4/5 only);
    ``garbage_rate``: share of telegrams preceded by a burst of line noise.
    """

    def __init__(
        self,
        *,
        dsmr_version: str = "5",
        interval_s: float = 1.0,
        link: str | os.PathLike[str] | None = DEFAULT_LINK,
        bad_crc_rate: float = 0.0,
        garbage_rate: float = 0.0,
        state: MeterState | None = None,
        seed: int | None = None,
    ) -> None:
        self.dsmr_version = dsmr_version
        self.interval_s = interval_s
        self.bad_crc_rate = bad_crc_rate
        self.garbage_rate = garbage_rate
        self.state = state or MeterState()
        self.stats = P1SimStats()
        self.pty = PtyDevice(link)
        self._rng = random.Random(seed)
        self._task: asyncio.Task[None] | None = None

    @property
    def path(self) -> str:
        return self.pty.slave_path

    async def start(self) -> str:
        """Open the pseudo-terminal and start writing; return its slave path."""
        path = self.pty.plug()
        self._task = asyncio.create_task(self._run(), name="p1-sim")
        return path

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        self.pty.unplug()

    def unplug(self) -> None:
        """Close the master and remove the link: the reader sees the port vanish."""
        self.pty.unplug()

    def plug(self) -> str:
        """A new pseudo-terminal at the same link; returns its slave path."""
        return self.pty.plug()

    def next_telegram(self, now: float) -> bytes:
        """The bytes of the next write, faults included (also used by benchmarks)."""
        self.state.advance(self.interval_s, now)
        bad = self.dsmr_version not in ("2.2", "3") and self._rng.random() < self.bad_crc_rate
        data = build_telegram(self.dsmr_version, self.state, now, bad_crc=bad)
        self.stats.telegrams_sent += 1
        if bad:
            self.stats.bad_crc_sent += 1
        if self._rng.random() < self.garbage_rate:
            self.stats.garbage_bursts += 1
            cut = self._rng.randrange(1, len(data))
            # Noise before a telegram, and sometimes a telegram cut short by a lost byte run.
            data = _GARBAGE + (data[:cut] if self._rng.random() < 0.5 else b"") + data
        return data

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while True:
            data = self.next_telegram(time.time())
            if self.pty.plugged:
                written = self.pty.write_nowait(data)
                self.stats.bytes_dropped += len(data) - written
            next_at += self.interval_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))


async def run_p1_sim(
    *,
    dsmr_version: str = "5",
    interval_s: float = 1.0,
    link: str | None = DEFAULT_LINK,
    bad_crc_rate: float = 0.0,
    garbage_rate: float = 0.0,
    ready: asyncio.Future[str] | None = None,
) -> None:
    """Run a simulator until cancelled; ``ready`` receives the pty path."""
    sim = P1Simulator(
        dsmr_version=dsmr_version,
        interval_s=interval_s,
        link=link,
        bad_crc_rate=bad_crc_rate,
        garbage_rate=garbage_rate,
    )
    await serve_until_cancelled(sim.start, sim.stop, ready)


def _interval(text: str) -> float:
    value = float(text)
    if not 0.01 <= value <= 3600:
        raise argparse.ArgumentTypeError(f"interval must be between 0.01 and 3600 s, got {text}")
    return value


def register_sim(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "p1",
        help="a DSMR smart meter writing P1 telegrams onto a pseudo-terminal",
        description="Writes DSMR telegrams (with an equipment id and an M-Bus gas meter; CRC-16 on "
        "DSMR 4/5) onto a pseudo-terminal every interval. Prints the pty path and links it at --link.",
    )
    parser.add_argument("--dsmr", default="5", choices=["2.2", "3", "4", "5"], help="DSMR version (default 5)")
    parser.add_argument("--interval-s", type=_interval, default=1.0, help="seconds between telegrams (default 1)")
    parser.add_argument("--link", default=DEFAULT_LINK, help=f"symlink to the pty (default {DEFAULT_LINK})")
    parser.add_argument("--bad-crc-rate", type=rate, default=0.0, help="share of telegrams with a wrong CRC")
    parser.add_argument("--garbage-rate", type=rate, default=0.0, help="share of telegrams after line noise")
    parser.set_defaults(handler=_main)


def _main(args: argparse.Namespace) -> int:
    return run_from_cli(
        lambda ready: run_p1_sim(
            dsmr_version=args.dsmr,
            interval_s=args.interval_s,
            link=args.link,
            bad_crc_rate=args.bad_crc_rate,
            garbage_rate=args.garbage_rate,
            ready=ready,
        ),
        lambda path: f"p1 simulator (DSMR {args.dsmr}) on {path}, linked at {args.link}",
    )
