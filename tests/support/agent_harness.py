"""The agent as a child process on a provisioned temporary gateway: moved to
:mod:`heatgate.agent.devtools.harness` (the benchmarks use it too); re-exported for the tests."""

from heatgate.agent.devtools.harness import (
    GATEWAY_ID,
    Gateway,
    HarnessError,
    KillResult,
    KillRound,
    LoadRig,
    fast_policy,
    kill_rounds,
    listening,
    load_sources,
    published_ids,
    rss_kb,
    spawn_sim,
    stop_process,
    wait_until,
)

__all__ = [
    "GATEWAY_ID",
    "Gateway",
    "HarnessError",
    "KillResult",
    "KillRound",
    "LoadRig",
    "fast_policy",
    "kill_rounds",
    "listening",
    "load_sources",
    "published_ids",
    "rss_kb",
    "spawn_sim",
    "stop_process",
    "wait_until",
]
