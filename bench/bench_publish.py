"""Publisher benchmarks against a local Mosquitto (started here, loopback, plain TCP).

    .venv/bin/python -m bench.bench_publish            # seconds
    .venv/bin/python -m bench.bench_publish --big      # 500,000-record backlog for fault latency
    .venv/bin/python -m bench.bench_publish --distinct-raw   # also raw paho with a distinct payload per message
    .venv/bin/python -m bench.bench_publish --loop-paho      # also paho on heatgate's loop, no drain
    .venv/bin/python -m bench.bench_publish --warm-pool      # also the publisher on a pool of warm records

Prints: drain msgs/s and readings/s of the Publisher (in-memory buffer, and the real encrypted
buffer) against a raw paho QoS 1 publisher of equal-size messages with the same in-flight window,
measured in the same run, for several windows; fault latency behind a backlog (p50/p99); CPU µs per
published reading.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import os
import platform
import resource
import statistics
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.memory_buffer import (
    fault_record,
    open_real_buffer,
    telemetry_record,
)
from heatgate.agent.publish.client import MqttClient
from heatgate.agent.publish.publisher import Publisher
from heatgate.buffer.api import NewRecord
from heatgate.buffer.batch import BatchBuilder, IdView, TakenBatch
from heatgate.buffer.wire import wire_form
from heatgate.logs import configure

GW = "gw-bench-0001"


class InOrderBuffer:
    """An ideal buffer (records in order, O(1) take apart from slicing its columns), so that the
    figures are the publisher's. Its records are laid out once, as the buffer hands them out:
    columns with each record's stored wire form (:class:`heatgate.buffer.batch.TakenBatch`);
    its ids are a view (:class:`heatgate.buffer.batch.IdView`), so that a take, as one of the
    real buffer (whose writer thread makes the list), costs the loop no step per id."""

    def __init__(self, records: TakenBatch) -> None:
        self.records = dataclasses.replace(records, ids=IdView(records.ids))
        self.next = 0

    async def take_batch(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> TakenBatch:
        out = self.records.slice(self.next, self.next + limit)
        self.next += len(out)
        return out

    async def ack(self, ids: Any) -> None:
        pass

    async def release(self, ids: Any) -> None:
        raise AssertionError("nothing is released in a benchmark without faults")


class WarmPool(InOrderBuffer):
    """The ideal buffer over a pool of records it hands out again and again (ids repeat from one
    cycle to the next; this buffer's acks are no-ops): the bytes a take hands out were touched a
    few rounds before, warm in the cache, as the real buffer's are (its writer thread decrypts
    each batch into new memory just before it hands it out). :class:`InOrderBuffer`'s grid is
    read once, from memory."""

    POOL_RECORDS = 16_384

    def __init__(self, records: TakenBatch) -> None:
        super().__init__(records.slice(0, self.POOL_RECORDS))

    async def take_batch(self, limit: int, *, exclude_streams: frozenset[str] = frozenset()) -> TakenBatch:
        if self.next + limit > len(self.records):
            self.next = 0
        return await super().take_batch(limit, exclude_streams=exclude_streams)

    async def release(self, ids: Any) -> None:
        pass  # a stop may leave a taken round unsent: nothing to hand out again from a pool


def stored(records: list[NewRecord]) -> TakenBatch:
    """The records as the buffer hands them out: with the wire form each stored at commit."""
    batch = BatchBuilder()
    for r in records:
        batch.add(r.id, r.stream, r.route, wire_form(r.id, r.payload))
    return batch.build()


def cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raw_paho(broker: Broker, payloads: Sequence[bytes], count: int, window: int) -> tuple[float, float]:
    """(msgs/s, process CPU µs per message) of a bare paho QoS 1 publisher (its own network
    thread), ``window`` in flight, publishing ``payloads`` in turn (one payload: the same bytes
    every time, hot in the cache)."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(window)
    client.max_queued_messages_set(0)
    done = threading.Event()
    acked = [0]

    def on_publish(*_a: Any) -> None:
        acked[0] += 1
        if acked[0] == count:
            done.set()

    client.on_publish = on_publish
    client.connect("127.0.0.1", broker.port)
    client.loop_start()
    start, cpu0 = time.perf_counter(), cpu_s()
    for index in range(count):
        client.publish("bench/raw", payloads[index % len(payloads)], qos=1)
    done.wait(120)
    elapsed, cpu = time.perf_counter() - start, cpu_s() - cpu0
    client.disconnect()
    client.loop_stop()
    return count / elapsed, cpu / count * 1e6


async def loop_paho(broker: Broker, payload: bytes, count: int, window: int) -> float:
    """msgs/s of paho driven by heatgate's own client on the event loop (one thread, as the
    drain; PUBACKs read as the agent reads them, :mod:`heatgate.agent.publish.short_ack`),
    publishing one payload at QoS 1 with ``window`` in flight and nothing else: the drain without
    the drain. The gap between this and the publisher is what the drain itself costs."""
    sent = acked = 0
    done = asyncio.get_running_loop().create_future()

    def pump() -> None:
        nonlocal sent
        while sent < count and sent - acked < window:
            client.send("bench/loop", payload)
            sent += 1

    def on_answer(_mid: int, _refusal: object) -> None:
        nonlocal acked
        acked += 1
        if acked == count and not done.done():
            done.set_result(None)

    client = MqttClient(MqttConfig(url=broker.url, inflight_max=window), on_answer=on_answer, after_read=pump)
    await client.connect()
    start = time.perf_counter()
    pump()
    await asyncio.wait_for(done, 120)
    elapsed = time.perf_counter() - start
    await client.disconnect()
    return count / elapsed


async def drain(broker: Broker, buffer: Any, records: int, window: int, max_payload: int) -> dict[str, float]:
    config = MqttConfig(url=broker.url, inflight_max=window, max_payload_bytes=max_payload)
    publisher = Publisher(config, GW, buffer, version="bench", health=dict)
    task = asyncio.create_task(publisher.run())
    while not publisher.status()["connected"]:
        await asyncio.sleep(0.001)
    cpu0, t0 = cpu_s(), time.perf_counter()  # like the raw baseline: connected, then timed
    while publisher.status()["published"] < records:
        await asyncio.sleep(0.005)
    elapsed, cpu = time.perf_counter() - t0, cpu_s() - cpu0
    status = publisher.status()
    await publisher.stop()
    await task
    messages = status["published_messages"]
    return {
        "msgs_s": messages / elapsed,
        "readings_s": records / elapsed,
        "messages": messages,
        "cpu_us_per_reading": cpu / records * 1e6,
        "payload_bytes": 0.0,
    }


async def fault_latency(broker: Broker, directory: Path, backlog: int, faults: int) -> list[float]:
    sent: dict[str, float] = {}
    latencies: list[float] = []
    got_all = threading.Event()

    def on_message(_c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        now = time.perf_counter()
        for record_id, at in list(sent.items()):
            if record_id.encode() in msg.payload:
                latencies.append(now - at)
                del sent[record_id]
        if len(latencies) >= faults:
            got_all.set()

    sub = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    sub.on_message = on_message
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe(f"heatgate/v1/{GW}/service/fault", qos=1)
    sub.loop_start()
    buffer: Any = await open_real_buffer(directory)
    try:
        for start in range(0, backlog, 50_000):
            await buffer.put([telemetry_record(i) for i in range(start, min(backlog, start + 50_000))])
        publisher = Publisher(MqttConfig(url=broker.url), GW, buffer, version="bench", health=dict)
        task = asyncio.create_task(publisher.run())
        while publisher.status()["published"] < min(backlog // 10, 5000):
            await asyncio.sleep(0.01)
        for n in range(faults):
            record = fault_record(n)
            await buffer.put([record])
            sent[record.id] = time.perf_counter()
            publisher.wake()
            await asyncio.sleep(0.01)
        remaining = await buffer.count("telemetry")
        await asyncio.to_thread(got_all.wait, 30)
        await publisher.stop()
        await task
    finally:
        await buffer.close()
        sub.disconnect()
        sub.loop_stop()
    print(f"  backlog still queued when the last fault was put: {remaining} of {backlog}")
    return latencies


def _spread(ratios: list[float]) -> str:
    """``median (runs lowest..highest)``: how every ratio of the bench is printed (and parsed by
    ``bench.run_all``)."""
    return f"{statistics.median(ratios):.2f} (runs {min(ratios):.2f}..{max(ratios):.2f})"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--big", action="store_true", help="500,000-record backlog, more messages")
    parser.add_argument("--records", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=5, help="interleaved publisher/raw pairs per row")
    parser.add_argument("--messages", type=int, default=1500, help="at least this many messages per run")
    parser.add_argument(
        "--distinct-raw",
        action="store_true",
        help="also a raw paho run per pair that publishes a distinct payload per message (as many bytes in all "
        "as the publisher's records, so both read cold data), reported as a second ratio beside the target's",
    )
    parser.add_argument(
        "--warm-pool",
        action="store_true",
        help="also a publisher run per pair on a pool of 16,384 records handed out again and again (bytes warm "
        "in the cache, as the real buffer's fresh batches), reported as a further ratio beside the target's",
    )
    parser.add_argument(
        "--loop-paho",
        action="store_true",
        help="also heatgate's MQTT client (paho, PUBACKs read as the agent reads them) on its event loop with "
        "nothing else (one payload, as raw paho): its ratio to raw paho is the client's ceiling, the "
        "publisher's ratio to it what the drain costs",
    )
    args = parser.parse_args()
    windows = (4, 16, 32, 128) if args.big else (4, 32, 128)
    configure(level="warning")
    records = args.records or (200_000 if args.big else 20_000)
    backlog = 500_000 if args.big else 50_000
    print(
        f"# heatgate publisher benchmark — {time.strftime('%Y-%m-%d')} — {platform.node()} "
        f"({platform.machine()}, {os.cpu_count()} cpu, Python {platform.python_version()})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        broker = Broker(Path(tmp) / "broker")
        broker.start()
        try:
            sample = telemetry_record(1)
            per_reading = len(sample.payload) + len(sample.id) + 18
            print(
                f"reading body ≈ {per_reading} bytes on the wire; each row: median of {args.repeat} interleaved "
                f"pairs (publisher run, then raw paho run), ≥ {args.messages} messages per run"
            )
            for max_payload in (16 * 1024, 64 * 1024):
                grid_records = max(records, args.messages * max_payload // per_reading)
                grid = stored([telemetry_record(i) for i in range(grid_records)])
                for window in windows:
                    ours_runs, raw_runs, raw_cpu, ratios, distinct_ratios = [], [], [], [], []
                    loop_ratios: list[tuple[float, float]] = []
                    warm_ratios: list[float] = []
                    for _ in range(args.repeat):
                        ours = asyncio.run(drain(broker, InOrderBuffer(grid), grid_records, window, max_payload))
                        size = int(grid_records * per_reading / ours["messages"])
                        raw_payload = os.urandom(size)
                        raw, cpu_us = raw_paho(broker, [raw_payload], int(ours["messages"]), window)
                        ours_runs.append(ours)
                        raw_runs.append(raw)
                        raw_cpu.append(cpu_us)
                        ratios.append(ours["msgs_s"] / raw)
                        if args.distinct_raw:
                            pool = [os.urandom(size) for _ in range(int(ours["messages"]))]
                            distinct, _ = raw_paho(broker, pool, len(pool), window)
                            distinct_ratios.append(ours["msgs_s"] / distinct)
                        if args.warm_pool:
                            warm = asyncio.run(drain(broker, WarmPool(grid), grid_records, window, max_payload))
                            warm_ratios.append(warm["msgs_s"] / raw)
                        if args.loop_paho:
                            on_loop = asyncio.run(loop_paho(broker, raw_payload, int(ours["messages"]), window))
                            loop_ratios.append((on_loop / raw, ours["msgs_s"] / on_loop))
                    mid = statistics.median
                    per_message = grid_records / mid(o["messages"] for o in ours_runs)
                    print(
                        f"payload≤{max_payload // 1024} KiB window {window:>3}: "
                        f"publisher {mid(o['msgs_s'] for o in ours_runs):6.0f} msgs/s "
                        f"{mid(o['readings_s'] for o in ours_runs):7.0f} readings/s | "
                        f"raw paho {mid(raw_runs):6.0f} msgs/s (≈{size} B) | "
                        f"ratio {_spread(ratios)} | "
                        f"CPU µs/msg {mid(o['cpu_us_per_reading'] for o in ours_runs) * per_message:.0f} "
                        f"vs raw {mid(raw_cpu):.0f} | "
                        f"{mid(o['cpu_us_per_reading'] for o in ours_runs):.1f} µs/reading"
                        + (
                            f" | ratio vs raw with distinct payloads {_spread(distinct_ratios)}"
                            if distinct_ratios
                            else ""
                        )
                        + (f" | ratio with a warm pool {_spread(warm_ratios)}" if warm_ratios else "")
                        + (
                            f" | paho on the loop / raw {mid(r for r, _ in loop_ratios):.2f}, "
                            f"publisher / paho on the loop {mid(d for _, d in loop_ratios):.2f}"
                            if loop_ratios
                            else ""
                        )
                    )
            for window in (32,):

                async def real(window: int = window) -> dict[str, float]:
                    buffer: Any = await open_real_buffer(Path(tmp) / f"real-{window}")
                    try:
                        for start in range(0, records, 50_000):
                            await buffer.put([telemetry_record(i) for i in range(start, min(records, start + 50_000))])
                        return await drain(broker, buffer, records, window, 64 * 1024)
                    finally:
                        await buffer.close()

                result = asyncio.run(real())
                print(
                    f"real encrypted buffer, window {window}: {result['msgs_s']:.0f} msgs/s "
                    f"{result['readings_s']:.0f} readings/s, CPU {result['cpu_us_per_reading']:.1f} µs/reading "
                    "(buffer's take/decrypt/ack included)"
                )
            latencies = asyncio.run(fault_latency(broker, Path(tmp) / "faults", backlog, 40))
            print(
                f"fault latency behind a {backlog}-record backlog: n={len(latencies)} "
                f"p50 {pct(latencies, 0.5) * 1000:.1f} ms, p99 {pct(latencies, 0.99) * 1000:.1f} ms, "
                f"max {max(latencies) * 1000:.1f} ms, mean {statistics.mean(latencies) * 1000:.1f} ms"
            )
        finally:
            broker.stop()


if __name__ == "__main__":
    main()
