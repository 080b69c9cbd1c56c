"""Readings per second through the privacy pipeline (route + minimise + aggregate + pseudonymise).

Baselines in the same run: constructing the Reading objects, and JSON-encoding them with msgspec
(the least any consumer of a reading does). The pipeline figure covers ``process()`` over a
realistic mix (heat pumps, energy meters, a smart meter; measurements, counters, status,
faults, identifiers) plus the ``flush()`` that closes every window of the run.

    .venv/bin/python -m bench.bench_privacy            # 200,000 readings, ~ seconds
    .venv/bin/python -m bench.bench_privacy --readings 2000000
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import time
from typing import Any

import msgspec

from heatgate.agent.config import GatewayConfig
from heatgate.agent.privacy.pipeline import Pipeline
from heatgate.agent.privacy.policy import load_policy
from heatgate.agent.privacy.pseudonym import PseudonymKeys
from heatgate.agent.privacy.state import PrivacyState
from heatgate.config import data_path
from heatgate.drivers.reading import PointKind, Reading

T0 = 1_717_200_000.0


class _Store:
    def __init__(self) -> None:
        self.values: dict[str, bytes] = {}

    async def get_state(self, key: str) -> bytes | None:
        return self.values.get(key)

    async def set_state(self, key: str, value: bytes | None) -> None:
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value


def _specs(devices: int) -> list[tuple[Any, ...]]:
    rng = random.Random(7)
    specs = []
    types = ["heat-pump", "energy-meter", "smart-meter"]
    for d in range(devices):
        device_type = types[d % 3]
        for p in range(12):
            kind = (
                [PointKind.MEASUREMENT] * 6
                + [PointKind.COUNTER] * 3
                + [PointKind.STATUS, PointKind.FAULT, PointKind.IDENTIFIER]
            )
            specs.append((f"src{d % 4}", f"dev{d}", device_type, f"p{p}", kind[p], rng.random()))
    return specs


def _make(specs: list[tuple[Any, ...]], n: int) -> list[Reading]:
    out = []
    per_cycle = len(specs)
    for i in range(n):
        source, device, device_type, point, kind, base = specs[i % per_cycle]
        cycle = i // per_cycle
        ts = T0 + cycle * 10.0
        if kind is PointKind.COUNTER:
            value: Any = cycle * 3
        elif kind is PointKind.STATUS:
            value = (cycle // 50) % 3
        elif kind is PointKind.FAULT:
            value = 7 if (cycle // 200) % 5 == 4 else 0
        elif kind is PointKind.IDENTIFIER:
            value = f"SN{device}"
        else:
            value = 20.0 + base * 10 + (cycle % 17) * 0.1
        out.append(
            Reading(
                source=source,
                device=device,
                device_type=device_type,
                point=point,
                kind=kind,
                value=value,
                ts=ts,
                unit="x",
            )
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--readings", type=int, default=200_000)
    parser.add_argument("--devices", type=int, default=30)
    parser.add_argument("--batch", type=int, default=100, help="readings per process() call")
    args = parser.parse_args()
    specs = _specs(args.devices)

    started = time.perf_counter()
    readings = _make(specs, args.readings)
    make_s = time.perf_counter() - started

    encoder = msgspec.json.Encoder()
    started = time.perf_counter()
    for r in readings:
        encoder.encode(r)
    encode_s = time.perf_counter() - started

    async def build() -> Pipeline:
        store = _Store()
        state = await PrivacyState.load(store)
        keys = await PseudonymKeys.load(store)
        return Pipeline(
            load_policy(data_path("privacy.toml")),
            gateway=GatewayConfig(id="gw-bench", region="3511 AB"),
            keys=keys,
            state=state,
        )

    pipeline = asyncio.run(build())
    records = 0
    started = time.perf_counter()
    for start in range(0, len(readings), args.batch):
        records += len(pipeline.process(readings[start : start + args.batch]))
    records += len(pipeline.flush(force=True))
    pipeline_s = time.perf_counter() - started

    n = args.readings
    print(f"machine: {platform.machine()} {os.cpu_count()} cpu(s), Python {platform.python_version()}")
    print(f"readings: {n}, devices: {args.devices}, batch: {args.batch}, records out: {records}")
    print(f"baseline construct Reading : {n / make_s:12,.0f} readings/s")
    print(f"baseline msgspec json encode: {n / encode_s:12,.0f} readings/s")
    print(f"privacy pipeline process()  : {n / pipeline_s:12,.0f} readings/s")
    print(f"pipeline time / construct time: {pipeline_s / make_s:.2f}; / encode time: {pipeline_s / encode_s:.2f}")


if __name__ == "__main__":
    main()
