"""Find what a test left behind: threads, child processes, asyncio tasks."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def child_pids() -> set[int]:
    """Live (non-zombie) child processes of this process, from /proc."""
    me = os.getpid()
    children: set[int] = set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may contain spaces and parentheses.
        rest = stat.rsplit(")", 1)[1].split()
        state, ppid = rest[0], int(rest[1])
        if ppid == me and state != "Z":
            children.add(int(entry.name))
    return children


def live_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.is_alive()}


def settle(
    before_threads: set[threading.Thread], before_children: set[int], grace_s: float = 3.0
) -> tuple[list[str], list[int]]:
    """Wait up to ``grace_s`` for new threads and children to end; return what remains."""
    deadline = time.monotonic() + grace_s
    while True:
        threads = [t for t in live_threads() - before_threads]
        children = sorted(child_pids() - before_children)
        if (not threads and not children) or time.monotonic() > deadline:
            return [f"{t.name} ({type(t).__name__})" for t in threads], children
        for thread in threads:
            thread.join(timeout=0.05)
        if not threads:
            time.sleep(0.05)


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` that fails if the coroutine left tasks pending when it returned."""
    leftovers: list[str] = []

    async def wrapper() -> T:
        result = await coro
        current = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
        leftovers.extend(t.get_name() for t in pending)
        return result

    result = asyncio.run(wrapper())
    if leftovers:
        raise AssertionError(f"asyncio task(s) left running: {leftovers}")
    return result
