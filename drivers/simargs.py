"""Command-line pieces shared by the simulators (``heatgate sim …``) and their in-process runner."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable


def rate(text: str) -> float:
    """argparse type: a share between 0 and 1 (``--drop-rate 0.05``)."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"a rate is between 0 and 1, got {text}")
    return value


async def serve_until_cancelled(start: Callable[[], Awaitable[str]], stop: Callable[[], Awaitable[None]],
                                ready: asyncio.Future[str] | None = None) -> None:
    """Start a simulator, hand where it listens to ``ready``, run until cancelled, stop it."""
    where = await start()
    if ready is not None:
        ready.set_result(where)
    try:
        await asyncio.Event().wait()
    finally:
        await stop()
