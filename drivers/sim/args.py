"""Command-line pieces shared by the simulators (``heatgate sim …``) and their in-process runner."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any


def rate(text: str) -> float:
    """argparse type: a share between 0 and 1 (``--drop-rate 0.05``)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1, got {text}")
    return value


async def serve_until_cancelled(
    start: Callable[[], Awaitable[str]], stop: Callable[[], Awaitable[None]], ready: asyncio.Future[str] | None = None
) -> None:
    """Start a simulator, hand where it listens to ``ready``, run until cancelled, stop it."""
    where = await start()
    if ready is not None:
        ready.set_result(where)
    try:
        await asyncio.Event().wait()
    finally:
        await stop()


def run_from_cli(
    simulator: Callable[[asyncio.Future[str]], Coroutine[Any, Any, None]], announce: Callable[[str], str]
) -> int:
    """``heatgate sim …``: run ``simulator(ready)`` until SIGINT/SIGTERM, printing
    ``announce(where)`` once it listens. Exit status 0."""

    async def main() -> int:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[str] = loop.create_future()
        task = asyncio.create_task(simulator(ready), name="sim-main")
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        where = await ready
        print(announce(where), flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return 0

    return asyncio.run(main())
