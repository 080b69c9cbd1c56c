"""One gateway-host process of the fleet bench: many :class:`SimGateway` on one event loop.

Talks to the bench over a :mod:`multiprocessing` pipe: sends ``("ready", info)`` once every
gateway is open and started, waits for ``"stop"``, then stops the sources, drains the buffers
(up to ``drain_timeout_s``), stops the publishers and sends ``("done", report)``.
"""

from __future__ import annotations

import asyncio
import os
import resource
import threading
import time
from dataclasses import asdict
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from bench.fleet_support.gateways import GatewayParams, SimGateway
from heatgate.agent.privacy.policy import parse_policy

__all__ = ["host_main"]

OPEN_CONCURRENCY = 16


def rss_bytes() -> int:
    """Resident set size of this process now (``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def cpu_s() -> float:
    times = os.times()
    return times.user + times.system


def host_main(
    conn: Connection,
    gateways: list[tuple[str, str, str]],
    params: dict[str, Any],
    policy: dict[str, Any],
    drain_timeout_s: float,
) -> None:
    """Entry point of the process. ``gateways``: (gateway id, state dir, MQTT URL)."""
    import logging

    import structlog

    # The bench reads figures, not a thousand gateways' logs.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    asyncio.run(_host(conn, gateways, GatewayParams(**params), policy, drain_timeout_s))


async def _host(
    conn: Connection,
    specs: list[tuple[str, str, str]],
    params: GatewayParams,
    policy_data: dict[str, Any],
    drain_timeout_s: float,
) -> None:
    rss_empty = rss_bytes()
    policy = parse_policy(policy_data)
    gateways = [SimGateway(gid, Path(state_dir), url, params, policy) for gid, state_dir, url in specs]
    limit = asyncio.Semaphore(OPEN_CONCURRENCY)
    started_s = time.monotonic()

    async def open_one(gateway: SimGateway) -> None:
        async with limit:
            await gateway.open()

    await asyncio.gather(*(open_one(g) for g in gateways))
    for gateway in gateways:
        gateway.start()
    cpu_start = cpu_s()
    wall_start = time.monotonic()
    conn.send(
        (
            "ready",
            {
                "open_s": time.monotonic() - started_s,
                "threads": threading.active_count(),
                "rss_empty": rss_empty,
                "rss_open": rss_bytes(),
                "pid": os.getpid(),
            },
        )
    )
    samples: list[int] = []
    while not await asyncio.to_thread(conn.poll, 1.0):
        samples.append(rss_bytes())
    conn.recv()
    cpu_run = cpu_s() - cpu_start
    wall_run = time.monotonic() - wall_start
    threads_run = threading.active_count()

    await asyncio.gather(*(g.stop_source() for g in gateways))
    deadline = time.monotonic() + drain_timeout_s
    queued = sum(await asyncio.gather(*(g.queued() for g in gateways)))
    while queued and time.monotonic() < deadline:
        await asyncio.sleep(0.5)
        queued = sum(await asyncio.gather(*(g.queued() for g in gateways)))
    drained_s = time.monotonic() - wall_start - wall_run
    statuses = [g.status() for g in gateways]
    per_gateway = await asyncio.gather(*(g.queued() for g in gateways))
    stuck = [
        {
            "gateway": g.gateway_id,
            "queued": n,
            "connects": len(g.connects),
            "disconnects": len(g.disconnects),
            "last_connect_s": g.connects[-1] if g.connects else None,
            **{k: v for k, v in st.items() if k in ("connected", "inflight", "last_error", "published", "reconnects")},
        }
        for g, n, st in zip(gateways, per_gateway, statuses, strict=True)
        if n
    ]
    await asyncio.gather(*(g.close() for g in gateways))
    conn.send(
        (
            "done",
            {
                "produced": [i for g in gateways for i in g.produced],
                "connects": [t for g in gateways for t in g.connects],
                "disconnects": [t for g in gateways for t in g.disconnects],
                "undelivered": queued,
                "stuck": stuck,
                "published": sum(s["published"] for s in statuses),
                "refused": sum(s["refused"] for s in statuses),
                "cpu_run_s": cpu_run,
                "wall_run_s": wall_run,
                "drain_s": drained_s,
                "threads_run": threads_run,
                "rss_empty": rss_empty,
                "rss_peak_run": max(samples, default=rss_bytes()),
                "maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "params": asdict(params),
            },
        )
    )
