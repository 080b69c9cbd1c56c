"""A real nats-server (JetStream + MQTT listener) on free loopback ports, alone or as a cluster.

Like :mod:`heatgate.agent.devtools.localbroker` for Mosquitto: a generated config in a temporary directory,
readiness awaited by connecting (the client port, then the MQTT port, which NATS opens only
once JetStream is up), never by sleeping a fixed time. ``stop()``/``start()`` and ``kill()`` keep
the ports and the JetStream store, for fault tests. Used by the tests and by ``bench.fleet``.

NATS's MQTT listener needs a ``server_name`` and JetStream; MQTT 3.1.1 only (no MQTT 5),
QoS 0 and 1 (QoS 2 is refused), MQTT topics map to NATS subjects (``a/b`` -> ``a.b``),
sessions and retained messages live in JetStream streams (``$MQTT_sess``, ``$MQTT_rmsgs``).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from heatgate.agent.devtools.localbroker import free_port
from heatgate.errors import HeatgateError

__all__ = ["NatsCluster", "NatsError", "NatsNode", "nats_binary", "nats_cluster", "nats_server"]

CLUSTER_NAME = "heatgate"


class NatsError(HeatgateError):
    """nats-server could not be started; ``log_tail`` is the end of its log."""

    def __init__(self, message: str, *, log_tail: str = "") -> None:
        super().__init__(message + (f"\n{log_tail}" if log_tail else ""))
        self.log_tail = log_tail


def nats_binary() -> str:
    path = shutil.which("nats-server") or ("/usr/sbin/nats-server" if Path("/usr/sbin/nats-server").exists() else None)
    if path is None:
        raise NatsError("nats-server is not installed: apt-get install nats-server (make test does it as root)")
    return path


@dataclass
class NatsNode:
    """One nats-server. ``routes`` are the cluster ports of its peers (empty: a single server)."""

    directory: Path
    name: str = "n1"
    client_port: int = 0
    mqtt_port: int = 0
    cluster_port: int = 0
    http_port: int = 0
    routes: Sequence[int] = ()
    max_file_bytes: int = 2 * 1024**3
    mqtt_stream_replicas: int = 0
    """Replicas of the MQTT streams (``$MQTT_msgs``, ``$MQTT_sess``, ``$MQTT_rmsgs``); 0: NATS's
    default, which 2.9 derives from the number of *routes* in the config (2 in a 3-node cluster
    whose nodes list their two peers), not the cluster size."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.client_port = self.client_port or free_port()
        self.mqtt_port = self.mqtt_port or free_port()
        self.http_port = self.http_port or free_port()
        self.log_path = self.directory / "nats.log"
        self.config_path = self.directory / "nats.conf"

    @property
    def url(self) -> str:
        """The NATS client URL (nats-py)."""
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def mqtt_url(self) -> str:
        """The MQTT listener, as heatgate's ``mqtt.url``."""
        return f"mqtt://127.0.0.1:{self.mqtt_port}"

    def config(self) -> str:
        store = self.directory / "jetstream"
        lines = [
            f"server_name: {self.name}",
            f"listen: 127.0.0.1:{self.client_port}",
            f'log_file: "{self.log_path}"',
            f"http: 127.0.0.1:{self.http_port}",
            "jetstream {",
            f'  store_dir: "{store}"',
            "  max_memory_store: 256MB",
            f"  max_file_store: {self.max_file_bytes}",
            "}",
            "mqtt {",
            f"  listen: 127.0.0.1:{self.mqtt_port}",
            # Redelivery of unacknowledged QoS 1 messages to MQTT subscribers.
            "  ack_wait: 30s",
            *([f"  stream_replicas: {self.mqtt_stream_replicas}"] if self.mqtt_stream_replicas else []),
            "}",
        ]
        if self.routes:
            lines += [
                "cluster {",
                f"  name: {CLUSTER_NAME}",
                f"  listen: 127.0.0.1:{self.cluster_port}",
                "  routes: [" + ", ".join(f"nats-route://127.0.0.1:{p}" for p in self.routes) + "]",
                "}",
            ]
        return "\n".join(lines) + "\n"

    def spawn(self) -> None:
        """Start the process without waiting for readiness (a cluster starts all nodes first)."""
        assert self.process is None, "already running"
        self.config_path.write_text(self.config())
        self.process = subprocess.Popen(
            [nats_binary(), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Wait until the client and MQTT ports accept connections and ``/healthz`` says ok
        (in a cluster, JetStream's meta leader is elected only seconds after the ports open,
        and MQTT connections fail until then)."""
        deadline = time.monotonic() + timeout_s
        for port in (self.client_port, self.mqtt_port, self.http_port):
            while True:
                if self.process is None or self.process.poll() is not None:
                    self.process = None
                    raise NatsError(f"nats-server {self.name} exited at start", log_tail=self.log_tail())
                try:
                    if port == self.http_port:
                        if self.healthy():
                            break
                        raise ConnectionRefusedError("not healthy yet")
                    with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                        break
                except OSError:
                    if time.monotonic() > deadline:
                        self.stop()
                        raise NatsError(
                            f"nats-server {self.name} did not listen on {port} within {timeout_s} s",
                            log_tail=self.log_tail(),
                        ) from None
                    try:
                        self.process.wait(timeout=0.02)  # returns early if it dies
                    except subprocess.TimeoutExpired:
                        pass

    def start(self, timeout_s: float = 30.0) -> None:
        self.spawn()
        self.wait_ready(timeout_s)

    def stop(self) -> None:
        """Shut down cleanly (SIGTERM), keeping the JetStream store."""
        self._end(signal.SIGTERM)

    def kill(self) -> None:
        """Die at once, as in a crash (SIGKILL)."""
        self._end(signal.SIGKILL)

    def _end(self, signum: int) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signum)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def healthy(self) -> bool:
        """``GET /healthz`` on the monitoring port answers 200 (JetStream current)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.http_port}/healthz", timeout=1.0) as answer:
                return bool(answer.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


@dataclass
class NatsCluster:
    """``size`` nodes routed to each other (JetStream clustered: streams up to R``size``; the MQTT
    streams, among them ``$MQTT_msgs`` where each QoS 1 PUBLISH is stored before its PUBACK, are
    R``min(3, size)``)."""

    directory: Path
    size: int = 3
    nodes: list[NatsNode] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.nodes:
            cluster_ports = [free_port() for _ in range(self.size)]
            self.nodes = [
                NatsNode(
                    self.directory / f"n{i + 1}",
                    name=f"n{i + 1}",
                    cluster_port=cluster_ports[i],
                    routes=[p for j, p in enumerate(cluster_ports) if j != i],
                    mqtt_stream_replicas=min(3, self.size),
                )
                for i in range(self.size)
            ]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout_s: float = 60.0) -> None:
        for node in self.nodes:
            if not node.running:
                node.spawn()
        try:
            for node in self.nodes:
                node.wait_ready(timeout_s)
        except NatsError:
            self.stop()
            raise

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def kill(self) -> None:
        for node in self.nodes:
            node.kill()


@contextmanager
def nats_server(directory: Path) -> Iterator[NatsNode]:
    """A single server with JetStream and MQTT, stopped on exit."""
    node = NatsNode(directory)
    node.start()
    try:
        yield node
    finally:
        node.stop()


@contextmanager
def nats_cluster(directory: Path, size: int = 3) -> Iterator[NatsCluster]:
    """A cluster of ``size`` nodes, all stopped on exit."""
    cluster = NatsCluster(directory, size=size)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
