"""Shared builders for the privacy tests (a pipeline on the shipped policy, readings)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from heatgate.agent.config import GatewayConfig
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.policy import Policy, load_policy
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.state import PrivacyState
from heatgate.buffer.api import NewRecord, StoredRecord
from heatgate.config import data_path
from heatgate.drivers.reading import PointKind, Quality, Reading
from tests.support.leaks import run_async
from tests.support.memory_state import MemoryState

DAY_S = 86400.0
T0 = 1_717_200_000.0  # 2024-06-01T00:00:00Z, a multiple of a day


def shipped_policy() -> Policy:
    return load_policy(data_path("privacy.toml"))


def make_pipeline(
    *,
    region: str = "3511 AB",
    gateway_id: str = "gw-test-0001",
    policy: Policy | None = None,
    store: Any = None,
    clock: Callable[[], float] = lambda: T0,
) -> Pipeline:
    store = store if store is not None else MemoryState()

    async def build() -> Pipeline:
        state = await PrivacyState.load(store, clock=clock)
        keys = await PseudonymKeys.load(store, clock=clock)
        return Pipeline(
            policy or shipped_policy(),
            gateway=GatewayConfig(id=gateway_id, region=region),
            keys=keys,
            state=state,
            clock=clock,
        )

    return run_async(build())


def reading(
    point: str,
    kind: PointKind,
    value: Any,
    ts: float,
    *,
    device: str = "hp1",
    source: str = "hp",
    device_type: str = "heat-pump",
    quality: Quality = Quality.OK,
    text: str | None = None,
    unit: str | None = None,
) -> Reading:
    return Reading(
        source=source,
        device=device,
        device_type=device_type,
        point=point,
        kind=kind,
        value=value,
        ts=ts,
        quality=quality,
        text=text,
        unit=unit,
    )


def bodies(records: Sequence[NewRecord | StoredRecord], stream: str | None = None) -> list[dict[str, Any]]:
    return [json.loads(r.payload) for r in records if stream is None or r.stream == stream]
