"""What the whole-agent and peer benchmarks measure, the same way for every process.

- CPU: utime + stime of a process (all its threads) from ``/proc/<pid>/stat``, over a window,
  as a percentage of one core.
- RSS: ``VmRSS`` from ``/proc/<pid>/status`` (sampled; the maximum and the last are kept).
- Messages at the broker: a paho subscriber on ``#`` counting what arrives.
- The machine: CPU model, cores, memory, Python, date.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as mqtt

__all__ = ["BrokerCounter", "ProcessSampler", "cpu_seconds", "machine_description", "rss_bytes", "slope_per_min"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (all threads), in seconds."""
    with open(f"/proc/{pid}/stat") as handle:
        text = handle.read()
    fields = text.rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3 of proc(5)); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


@dataclass
class ProcessSampler:
    """CPU over a window and RSS samples of one process; call ``start()``, ``sample()`` now and
    then, ``stop()``."""

    pid: int
    cpu_start_s: float = 0.0
    wall_start_s: float = 0.0
    cpu_end_s: float = 0.0
    wall_end_s: float = 0.0
    rss_samples: list[int] = field(default_factory=list)

    def start(self) -> None:
        self.cpu_start_s, self.wall_start_s = cpu_seconds(self.pid), time.monotonic()
        self.sample()

    def sample(self) -> None:
        self.rss_samples.append(rss_bytes(self.pid))

    def stop(self) -> None:
        self.sample()
        self.cpu_end_s, self.wall_end_s = cpu_seconds(self.pid), time.monotonic()

    @property
    def cpu_percent(self) -> float:
        wall = self.wall_end_s - self.wall_start_s
        return 100.0 * (self.cpu_end_s - self.cpu_start_s) / wall if wall > 0 else 0.0

    @property
    def rss_max_mib(self) -> float:
        return max(self.rss_samples, default=0) / 2**20

    @property
    def rss_last_mib(self) -> float:
        return (self.rss_samples[-1] if self.rss_samples else 0) / 2**20


class BrokerCounter:
    """A subscriber on ``topic`` that counts messages (paho's own network thread)."""

    def __init__(self, host: str, port: int, topic: str = "#") -> None:
        self.count = 0
        self.bytes = 0
        self.by_prefix: dict[str, int] = {}
        self.readings_by_prefix: dict[str, int] = {}
        self._lock = threading.Lock()
        self._subscribed = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-counter-{os.getpid()}")
        self._client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(topic, qos=1)
        self._client.on_subscribe = lambda *_a: self._subscribed.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            self.close()
            raise RuntimeError(f"could not subscribe at {host}:{port}")

    def _on_message(self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.count += 1
            self.bytes += len(message.payload)
            key = "/".join(message.topic.split("/")[:2])
            self.by_prefix[key] = self.by_prefix.get(key, 0) + 1
            self.readings_by_prefix[key] = self.readings_by_prefix.get(key, 0) + readings_in(message.payload)

    def snapshot(self) -> int:
        with self._lock:
            return self.count

    def prefixes(self) -> dict[str, int]:
        """Messages so far by the first two topic levels (``heatgate/v1``, ``v1/gateway``)."""
        with self._lock:
            return dict(self.by_prefix)

    def readings(self) -> dict[str, int]:
        """Readings so far by prefix (see :func:`readings_in`)."""
        with self._lock:
            return dict(self.readings_by_prefix)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


def readings_in(payload: bytes | bytearray) -> int:
    """Readings a message carries: a heatgate message's ``records``; a ThingsBoard gateway
    telemetry message's values (``{"device": [{"ts": …, "values": {…}}]}``); else 0."""
    try:
        document = json.loads(payload)
    except ValueError:
        return 0
    if not isinstance(document, dict):
        return 0
    if isinstance(document.get("records"), list):
        return len(document["records"])
    count = 0
    for entries in document.values():
        for entry in entries if isinstance(entries, list) else []:
            values = entry.get("values") if isinstance(entry, dict) else None
            count += len(values) if isinstance(values, dict) else 0
    return count


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute; 0 for fewer than 3 points."""
    if len(points) < 3:
        return 0.0
    xs = [p[0] for p in points]
    ys = [p[1] for p in points]
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return 0.0
    return 60.0 * sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var


def machine_description() -> dict[str, str]:
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    memory = "?"
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemTotal:"):
                    memory = f"{int(line.split()[1]) / 2**20:.1f} GiB"
                    break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": str(os.cpu_count()),
        "memory": memory,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "date": time.strftime("%Y-%m-%d"),
    }
