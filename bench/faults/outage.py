"""A broker outage that held a week of home load, then recovery; prints a PASS/FAIL verdict.

    .venv/bin/python -m bench.faults.outage                 # 220,000 records (one week), ~1-2 min
    .venv/bin/python -m bench.faults.outage --records 50000 # quick

A week of home load under the shipped policy: a heat pump (20 measurements) and an energy meter
(15), each point as mean/min/max per 5-minute window = 105 telemetry records per 5 minutes =
211,680 a week, plus ~6,000 hourly analytics records and the smart meter's daily values: about
220,000 records. The backlog is put straight into the gateway's encrypted buffer (through the
buffer itself, created times spread over the past 7 days), as if the broker had been down all
week. Then the agent starts against a real Mosquitto and drains it to a subscriber, while its
RSS is sampled from /proc every 0.2 s. Baseline in the same run: the same agent, same config,
empty buffer.

PASS when every backlog id reached the subscriber, the buffer is empty afterwards, and the
RSS is flat: the highest sample during the drain within 1.5 x the baseline, and less than
10 MiB between the samples at 10 % and 90 % of the drain.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import sys
import tempfile
import time
from pathlib import Path

import msgspec

from heatgate.agent.devtools.harness import Gateway, published_ids, rss_kb, wait_until
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.subscriber import Subscriber
from heatgate.agent.payloads import TelemetryBody
from heatgate.buffer.api import NewRecord
from heatgate.buffer.ids import IdGenerator

WEEK_S = 7 * 86400
WEEK_RECORDS = 220_000


def _backlog(count: int, now_s: float) -> list[NewRecord]:
    ids = IdGenerator(lambda: now_s - WEEK_S)
    encoder = msgspec.json.Encoder()
    records = []
    step_s = WEEK_S / count
    for n in range(count):
        created_s = now_s - WEEK_S + n * step_s
        window = int(created_s // 300 * 300)
        body = TelemetryBody(
            device="hp1" if n % 2 else "meter1",
            device_type="heat-pump" if n % 2 else "energy-meter",
            point=f"point_{n % 35}",
            unit="degC",
            agg=("mean", "min", "max")[n % 3],
            value=round(20 + (n % 97) / 10, 3),
            samples=30,
            window_s=300,
            window_start=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(window)),
        )
        records.append(
            NewRecord(
                id=ids.new(),
                stream="telemetry",
                route="telemetry",
                priority=2,
                created_s=created_s,
                payload=encoder.encode(body),
            )
        )
    return records


def _fill(gateway: Gateway, records: list[NewRecord]) -> None:
    from heatgate.agent.config import load_config
    from heatgate.agent.privacy.policy import load_policy
    from heatgate.buffer.adapter import open_buffer
    from heatgate.buffer.keys import load_master_key

    config = load_config(gateway.config_path).config

    async def put() -> None:
        buffer = await open_buffer(
            config.buffer_path,
            load_master_key(config.master_key_path, None),
            cap_bytes=config.buffer.cap_bytes,
            commit_interval_s=0,
            retention_s=load_policy(config.policy_path).retention_s(),
        )
        try:
            for start in range(0, len(records), 5000):
                await buffer.put(records[start : start + 5000])
        finally:
            await buffer.close()

    asyncio.run(put())


def _sample(gateway: Gateway, seconds: float) -> list[int]:
    samples = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        samples.append(rss_kb(gateway.pid))
        time.sleep(0.2)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=WEEK_RECORDS, help=f"backlog size (default {WEEK_RECORDS})")
    parser.add_argument("--timeout-s", type=float, default=600.0)
    args = parser.parse_args()
    print(
        f"machine: {platform.node()} {platform.machine()} Python {platform.python_version()}; "
        f"backlog {args.records} records ({args.records / WEEK_RECORDS:.2f} week(s) of home load)"
    )
    with tempfile.TemporaryDirectory(prefix="heatgate-outage-") as tmp:
        root = Path(tmp)
        broker = Broker(root / "broker")
        broker.start()
        subscriber = Subscriber("127.0.0.1", broker.port, ["heatgate/#"]).start()
        gateway = Gateway(root / "gw", broker_url=broker.url, policy_text=None)
        try:
            gateway.provision()
            # Baseline: the same agent with an empty buffer, connected and idle.
            gateway.start()
            gateway.wait_status(lambda s: s["broker"].get("connected"), timeout_s=30)
            baseline_kb = max(_sample(gateway, 3.0))
            assert gateway.stop() == 0
            records = _backlog(args.records, time.time())
            wanted = {r.id for r in records}
            started = time.monotonic()
            _fill(gateway, records)
            fill_s = time.monotonic() - started
            del records
            db_mb = sum(p.stat().st_size for p in gateway.state.glob("buffer.db*")) / 2**20
            print(f"backlog written in {fill_s:.1f} s; buffer.db {db_mb:.1f} MiB")

            gateway.start()
            started = time.monotonic()
            samples: list[tuple[float, int, int]] = []  # (s since start, rss KiB, received so far)

            def drained() -> bool:
                with subscriber._cond:
                    payloads = [m.payload for m in subscriber.messages[drained.seen :]]  # type: ignore[attr-defined]
                    drained.seen += len(payloads)  # type: ignore[attr-defined]
                drained.got.update(published_ids(payloads))  # type: ignore[attr-defined]
                samples.append((time.monotonic() - started, rss_kb(gateway.pid), len(drained.got & wanted)))  # type: ignore[attr-defined]
                return wanted <= drained.got  # type: ignore[attr-defined]

            drained.seen = 0  # type: ignore[attr-defined]
            drained.got = set()  # type: ignore[attr-defined]
            try:
                wait_until(drained, timeout_s=args.timeout_s, what="the backlog at the subscriber", poll_s=0.2)
            except Exception as exc:
                print(f"drain incomplete: {exc}")
            drain_s = time.monotonic() - started
            final = gateway.wait_status(lambda s: True, timeout_s=10)
            queued = final["buffer"]["streams"]["telemetry"]["queued"]
            after_kb = max(_sample(gateway, 2.0))
            exit_code = gateway.stop()
        finally:
            gateway.close()
            subscriber.stop()
            broker.stop()
    got = len(drained.got & wanted)  # type: ignore[attr-defined]
    with_data = [s for s in samples if s[2] > 0]

    def at(share: float) -> int:
        for _t, rss, n in with_data:
            if n >= share * len(wanted):
                return rss
        return with_data[-1][1] if with_data else 0

    peak_kb = max(rss for _t, rss, _n in samples)
    print("t_s  rss_MiB  delivered")
    for t, rss, n in samples[:: max(1, len(samples) // 12)]:
        print(f"{t:5.1f} {rss / 1024:7.1f} {n:9d}")
    growth_kb = at(0.9) - at(0.1)
    print(
        f"delivered {got}/{len(wanted)} in {drain_s:.1f} s ({got / max(drain_s, 1e-9):,.0f} records/s); "
        f"queued after: {queued}; clean stop exit {exit_code}"
    )
    print(
        f"RSS: baseline (empty buffer) {baseline_kb / 1024:.1f} MiB; drain peak {peak_kb / 1024:.1f} MiB "
        f"(peak/baseline {peak_kb / baseline_kb:.2f}); at 10 % {at(0.1) / 1024:.1f} MiB, at 90 % "
        f"{at(0.9) / 1024:.1f} MiB (growth {growth_kb / 1024:+.1f} MiB); after {after_kb / 1024:.1f} MiB"
    )
    ok = (
        got == len(wanted) and queued == 0 and peak_kb <= 1.5 * baseline_kb and growth_kb < 10 * 1024 and exit_code == 0
    )
    print(f"VERDICT outage: {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
