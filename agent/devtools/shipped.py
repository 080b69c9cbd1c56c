"""The product as it ships, for the acceptance suite and the soak benchmark.

The gateway's config is the shipped ``config/heatgate.example.toml`` loaded as data with only
its ports and paths changed (state dir, broker URL, simulator hosts/ports/links, the pinned
command key) plus the keys a test names in ``overrides``; its policy is the shipped
``config/privacy.toml`` (the example config names none). The simulators are the ones the
example config is written for, each as its own process (``python -m heatgate sim …``)::

    sims = ShippedSims(tmp / "sims").start()
    gateway = ShippedGateway(tmp / "gw", broker_url=broker.url, sims=sims)
    gateway.provision()                 # keys, a pinned command key, the derived config
    gateway.start()                     # `python -m heatgate run --config …` (harness.Gateway)
    gateway.signed("ping")              # an envelope signed by the pinned command key
    broker_connections(broker, gateway.client_id)   # counted at the broker, from its log

:func:`install_commit_log` adds a trigger to the buffer so that the harness knows every record
id the agent committed (the agent deletes records once acknowledged, so the table alone
cannot tell).
"""

from __future__ import annotations

import copy
import json
import re
import secrets
import sqlite3
import subprocess
import threading
import time
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from heatgate.agent.commands.envelope import encode_envelope
from heatgate.agent.commands.sign import sign_envelope
from heatgate.agent.devtools.demo import listening, stop_process
from heatgate.agent.devtools.harness import Gateway, HarnessError, spawn_sim, wait_until
from heatgate.agent.devtools.localbroker import Broker, free_port
from heatgate.agent.provision import Answers, provision

__all__ = [
    "Backend",
    "PublishedRecord",
    "ShippedGateway",
    "ShippedRig",
    "ShippedSims",
    "broker_connection_lines",
    "broker_connections",
    "committed_log",
    "derive_config",
    "example_settings",
    "install_commit_log",
    "to_toml",
]


def example_settings() -> dict[str, Any]:
    """The shipped example config, as data."""
    from heatgate.config import data_path

    with data_path("heatgate.example.toml").open("rb") as handle:
        return tomllib.load(handle)


# ---- the simulators of the example config ---------------------------------------------------


@dataclass
class ShippedSims:
    """The four simulators of the example config, each its own process: the heat pump over
    Modbus TCP, the energy meter over Modbus RTU on a pseudo-terminal, the P1 meter and the
    Z-Wave controller on pseudo-terminals. ``heatpump_args`` are extra options for the heat
    pump (``--fault 101@30``); :meth:`restart_heatpump` starts it again with others."""

    root: Path
    heatpump_args: tuple[str, ...] = ()
    heatpump_port: int = 0
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def meter_link(self) -> Path:
        return self.root / "meter"

    @property
    def p1_link(self) -> Path:
        return self.root / "p1"

    @property
    def zwave_link(self) -> Path:
        return self.root / "zwave"

    def start(self) -> ShippedSims:
        self.root.mkdir(parents=True, exist_ok=True)
        self.heatpump_port = self.heatpump_port or free_port()
        self._spawn_heatpump(self.heatpump_args)
        self.processes["meter"] = spawn_sim(
            self.root / "sim-meter.log", "meter", "--rtu", "--link", str(self.meter_link)
        )
        self._spawn_p1()
        self.processes["zwave"] = spawn_sim(self.root / "sim-zwave.log", "zwave", "--link", str(self.zwave_link))
        self.wait_ready()
        return self

    def _spawn_heatpump(self, args: tuple[str, ...]) -> None:
        self.processes["heatpump"] = spawn_sim(
            self.root / "sim-heatpump.log", "heatpump", "--port", str(self.heatpump_port), *args
        )

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        def ready() -> bool:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    log = (self.root / f"sim-{name}.log").read_text(errors="replace")[-2000:]
                    raise HarnessError(f"the {name} simulator exited with {process.returncode}:\n{log}")
            return listening(self.heatpump_port) and all(
                link.exists() for link in (self.meter_link, self.p1_link, self.zwave_link)
            )

        wait_until(ready, timeout_s=timeout_s, what="the simulators")

    def restart_heatpump(self, *args: str) -> None:
        """Stop the heat pump simulator and start it on the same port with ``args``."""
        stop_process(self.processes.pop("heatpump", None))
        wait_until(lambda: not listening(self.heatpump_port), timeout_s=10, what="the heat pump's port closed")
        self._spawn_heatpump(args)
        self.wait_ready()

    def unplug_p1(self) -> None:
        """Stop the P1 simulator: its pseudo-terminal closes, as a pulled cable (the link is
        left pointing at nothing)."""
        stop_process(self.processes.pop("p1", None))

    def plug_p1(self) -> None:
        """Start the P1 simulator again on the same link."""
        self.p1_link.unlink(missing_ok=True)
        self._spawn_p1()
        self.wait_ready()

    def _spawn_p1(self) -> None:
        self.processes["p1"] = spawn_sim(self.root / "sim-p1.log", "p1", "--link", str(self.p1_link))

    def close(self) -> None:
        for process in self.processes.values():
            stop_process(process)
        self.processes.clear()

    def __enter__(self) -> ShippedSims:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- the config: the example's, ports and paths changed -------------------------------------


def derive_config(
    example: dict[str, Any],
    *,
    state_dir: Path,
    broker_url: str,
    sims: ShippedSims,
    command_public_key_file: Path | None = None,
    overrides: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The example config with its state dir, broker URL, sources' hosts, ports and serial
    links (and the pinned command key, a path) replaced; ``overrides`` = ``{"mqtt":
    {"puback_timeout_s": 2.0}}`` sets the keys a test is about. Raises HarnessError if the
    example no longer has a source this harness simulates (so the suite follows it)."""
    data = copy.deepcopy(example)
    data["gateway"]["state_dir"] = str(state_dir)
    data["mqtt"]["url"] = broker_url
    if command_public_key_file is not None:
        data.setdefault("keys", {})["command_public_key_file"] = str(command_public_key_file)
    links = {"modbus-rtu": sims.meter_link, "p1": sims.p1_link, "zwave": sims.zwave_link}
    for source in data.get("sources", []):
        kind = source["type"]
        if kind == "modbus-tcp":
            source["host"], source["port"] = "127.0.0.1", sims.heatpump_port
        elif kind in links:
            source["port"] = str(links[kind])
        else:
            raise HarnessError(f"the example config has a source of type {kind!r} that no simulator here serves")
    kinds = sorted(source["type"] for source in data.get("sources", []))
    if kinds != sorted(["modbus-tcp", *links]):
        raise HarnessError(f"the example config's sources changed ({kinds}): update ShippedSims")
    for table, values in (overrides or {}).items():
        data.setdefault(table, {}).update(values)
    return data


def to_toml(data: dict[str, Any]) -> str:
    """TOML for a config's shape: top-level tables of scalars and lists, arrays of tables
    (nested once, as ``[[sources.devices]]``)."""
    lines: list[str] = []

    def value(item: Any) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, int | float | str):
            return json.dumps(item)
        if isinstance(item, list):
            return "[" + ", ".join(value(v) for v in item) + "]"
        raise HarnessError(f"to_toml: cannot write {item!r}")

    def table(header: str, body: dict[str, Any]) -> None:
        lines.append(header)
        nested: list[tuple[str, list[dict[str, Any]]]] = []
        for key, item in body.items():
            if isinstance(item, list) and item and all(isinstance(v, dict) for v in item):
                nested.append((key, item))
            elif isinstance(item, dict):
                raise HarnessError(f"to_toml: nested table {key!r} is not supported")
            else:
                lines.append(f"{key} = {value(item)}")
        for key, entries in nested:
            name = header.strip("[]") + "." + key
            for entry in entries:
                table(f"[[{name}]]", entry)

    for name, body in data.items():
        if isinstance(body, dict):
            lines.append("")
            table(f"[{name}]", body)
        elif isinstance(body, list):
            for entry in body:
                lines.append("")
                table(f"[[{name}]]", entry)
        else:
            raise HarnessError(f"to_toml: top-level scalar {name!r} is not supported")
    return "\n".join(lines).lstrip() + "\n"


# ---- the gateway ------------------------------------------------------------------------------


@dataclass
class ShippedGateway(Gateway):
    """A gateway provisioned like a real one, with the example config's settings and the
    shipped policy (see the module docstring). Process handling is :class:`Gateway`'s."""

    sims: ShippedSims | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    command_key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def socket_path(self) -> Path:
        return self.state / "status.sock"  # the example config's default: <state_dir>/status.sock

    @property
    def gateway_id(self) -> str:
        return str(self.settings["gateway"]["id"])

    @property
    def client_id(self) -> str:
        """The MQTT client id the agent uses: the config's, else ``heatgate-<gateway id>``
        (what agent/publish/publisher.py does; the example config's comment says the gateway
        id, so the broker-side count matches either)."""
        return str(self.settings["mqtt"].get("client_id", f"heatgate-{self.gateway_id}"))

    @property
    def prefix(self) -> str:
        return str(self.settings["mqtt"]["topic_prefix"])

    def topic(self, suffix: str) -> str:
        return f"{self.prefix}/{self.gateway_id}/{suffix}"

    def provision(self) -> None:
        if self.sims is None:
            raise HarnessError("ShippedGateway needs the simulators")
        self.root.mkdir(parents=True, exist_ok=True)
        public = self.root / "command.pub"
        public.write_bytes(
            self.command_key.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
        )
        example = example_settings()
        # `heatgate provision` makes the state dir, the keys and pins the command key; the config
        # it writes is set aside (provisioned.toml) for the example's own settings.
        provision(
            Answers(
                gateway_id=example["gateway"]["id"],
                region=example["gateway"]["region"],
                state_dir=self.state,
                config_path=self.root / "provisioned.toml",
                broker_url=self.broker_url,
                command_public_key=public,
            )
        )
        self.settings = derive_config(
            example,
            state_dir=self.state,
            broker_url=self.broker_url,
            sims=self.sims,
            command_public_key_file=self.state / "keys" / "command.pub",
            overrides=self.overrides,
        )
        self.config_path.write_text(to_toml(self.settings))

    def signed(self, command: str, *, ttl_s: int = 300, **args: Any) -> bytes:
        """An envelope for this gateway signed by its pinned command key."""
        return encode_envelope(
            sign_envelope(self.command_key, target=self.gateway_id, command=command, args=args, ttl_s=ttl_s)
        )

    def command_key_file(self) -> Path:
        """The command key as a PEM file (for ``heatgate cmd send --sign-key``)."""
        path = self.root / "command.key"
        if not path.exists():
            path.write_bytes(
                self.command_key.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            path.chmod(0o600)
        return path


# ---- what the broker saw -----------------------------------------------------------------------

_CONNECTED = re.compile(r"New client connected from \S+ as (\S+) \(")


def broker_connections(broker: Broker, client_id: str | None = None) -> int:
    """Connections the broker accepted (from its log: Mosquitto logs ``New client connected
    from <addr> as <client id> (…)`` at notice level), of ``client_id`` or of every client. The
    log survives broker restarts (it is appended to)."""
    return len(broker_connection_lines(broker, client_id))


def broker_connection_lines(broker: Broker, client_id: str | None = None) -> list[str]:
    """The broker's log lines of accepted connections (see :func:`broker_connections`)."""
    try:
        text = broker.log_path.read_text(errors="replace")
    except FileNotFoundError:
        return []
    return [
        line
        for line in text.splitlines()
        if (match := _CONNECTED.search(line)) and (client_id is None or match.group(1) == client_id)
    ]


# ---- every id the agent committed ----------------------------------------------------------------

_LOG_TABLE = "harness_committed"


def install_commit_log(gateway: Gateway) -> None:
    """Create the gateway's buffer (through the buffer itself, agent stopped) and add a trigger
    that copies every committed record's id and stream into a side table. The agent never
    reads that table; only the harness does (:func:`committed_log`)."""
    if gateway.running:
        raise HarnessError("install_commit_log() needs the agent stopped")
    gateway.export()  # opens (and so creates) buffer.db with the gateway's master key
    conn = sqlite3.connect(gateway.db_path)
    try:
        conn.executescript(f"""
            CREATE TABLE IF NOT EXISTS {_LOG_TABLE} (id TEXT NOT NULL, stream TEXT NOT NULL, at_s REAL NOT NULL);
            CREATE TRIGGER IF NOT EXISTS harness_log_commit AFTER INSERT ON records BEGIN
                INSERT INTO {_LOG_TABLE} VALUES (NEW.id, NEW.stream, (julianday('now') - 2440587.5) * 86400.0);
            END;
        """)
    finally:
        conn.close()


def committed_log(gateway: Gateway) -> list[tuple[str, str, float]]:
    """``(id, stream, committed at, epoch s)`` of every record committed since
    :func:`install_commit_log`, read-only (safe while the agent runs: WAL readers never block
    the writer)."""
    conn = sqlite3.connect(f"file:{gateway.db_path}?mode=ro", uri=True, timeout=10.0)
    try:
        rows = conn.execute(f"SELECT id, stream, at_s FROM {_LOG_TABLE} ORDER BY rowid").fetchall()
    finally:
        conn.close()
    return [(str(r[0]), str(r[1]), float(r[2])) for r in rows]


# ---- the backend's side: a client that sends commands, and the whole rig ----------------------


class Backend:
    """A backend's MQTT client (MQTT 5, paho's network thread) that publishes envelopes at
    QoS 1 with correlation data; :meth:`flood` sends many and waits for every PUBACK."""

    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self._mqtt = mqtt
        self._connected = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"backend-{secrets.token_hex(4)}", protocol=mqtt.MQTTv5
        )
        self.client.on_connect = lambda *_a: self._connected.set()
        self.client.max_inflight_messages_set(100)
        self.client.max_queued_messages_set(0)
        self.client.connect(host, port, keepalive=30)
        self.client.loop_start()
        if not self._connected.wait(10):
            self.close()
            raise HarnessError(f"the backend client could not connect to {host}:{port}")

    def send(
        self, topic: str, payload: bytes, *, correlation_data: bytes | None = None, response_topic: str | None = None
    ) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        if correlation_data is not None:
            properties.CorrelationData = correlation_data
        if response_topic is not None:
            properties.ResponseTopic = response_topic
        info = self.client.publish(topic, payload, qos=1, properties=properties)
        if info.rc != self._mqtt.MQTT_ERR_SUCCESS:
            raise HarnessError(f"publish to {topic} failed: {self._mqtt.error_string(info.rc)}")
        return info

    def flood(self, topic: str, payloads: Iterable[bytes], *, timeout_s: float = 60.0) -> int:
        """Publish every payload (QoS 1) and wait until the broker acknowledged them all."""
        infos = [self.send(topic, payload) for payload in payloads]
        deadline = time.monotonic() + timeout_s
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            if not info.is_published():
                raise HarnessError(f"the broker did not acknowledge the flood within {timeout_s:g} s")
        return len(infos)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass(frozen=True)
class PublishedRecord:
    topic: str
    id: str
    body: dict[str, Any]
    at_monotonic: float


@dataclass
class ShippedRig:
    """A real Mosquitto (its log counts connections), the shipped gateway over ``sims``, a
    subscriber on ``#`` and a backend client. ``start()`` brings everything up and waits until
    the agent is connected; ``close()`` stops what it started (not the simulators)."""

    root: Path
    sims: ShippedSims
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)
    broker: Broker | None = None
    gateway: ShippedGateway | None = None
    subscriber: Any = None
    backend: Backend | None = None

    def start(self, *, connect_timeout_s: float = 30.0) -> ShippedRig:
        from heatgate.agent.devtools.subscriber import Subscriber

        self.root.mkdir(parents=True, exist_ok=True)
        self.broker = Broker(self.root / "broker")
        self.broker.start()
        self.gateway = ShippedGateway(
            self.root / "gw", broker_url=self.broker.url, sims=self.sims, overrides=self.overrides
        )
        self.gateway.provision()
        install_commit_log(self.gateway)
        self.subscriber = Subscriber("127.0.0.1", self.broker.port, ["#"]).start()
        self.backend = Backend("127.0.0.1", self.broker.port)
        self.gateway.start()
        self.gateway.wait_status(
            lambda s: bool(s["broker"].get("connected")),
            timeout_s=connect_timeout_s,
            what="the agent connected to the broker",
        )
        return self

    @property
    def gw(self) -> ShippedGateway:
        assert self.gateway is not None
        return self.gateway

    def connections(self) -> int:
        """The agent's connections, counted at the broker."""
        assert self.broker is not None
        return broker_connections(self.broker, self.gw.client_id)

    def messages(self, topic: str | None = None) -> list[Any]:
        with self.subscriber._cond:
            return [m for m in self.subscriber.messages if topic is None or m.topic == topic]

    def records(self, *, route: str | None = None, since_monotonic: float = 0.0) -> list[PublishedRecord]:
        """Every record in a published record message (state and commands have none)."""
        found: list[PublishedRecord] = []
        for message in self.messages():
            if message.at_monotonic < since_monotonic or (route is not None and message.topic != self.gw.topic(route)):
                continue
            try:
                document = json.loads(message.payload)
            except ValueError:
                continue
            if isinstance(document, dict):
                found.extend(
                    PublishedRecord(message.topic, r["id"], r.get("body", {}), message.at_monotonic)
                    for r in document.get("records", [])
                    if isinstance(r, dict) and "id" in r
                )
        return found

    def delivered_ids(self) -> list[str]:
        return [record.id for record in self.records()]

    def committed_ids(self) -> list[str]:
        return [row[0] for row in committed_log(self.gw)]

    def responses(self, *, correlation_data: bytes | None = None, since_monotonic: float = 0.0) -> list[Any]:
        """Messages on the gateway's ``cmd/response`` (with ``correlation_data``, if given)."""
        return [
            m
            for m in self.messages(self.gw.topic("cmd/response"))
            if m.at_monotonic >= since_monotonic
            and (correlation_data is None or getattr(m.properties, "CorrelationData", None) == correlation_data)
        ]

    def command(self, command: str, *, wait_s: float = 20.0, **args: Any) -> Any:
        """A signed command round trip, as ``heatgate cmd send`` does it (its ``exchange``);
        returns the gateway's :class:`agent.commands.dispatch.Response`."""
        return self.exchange(self.gw.signed(command, **args), wait_s=wait_s)

    def exchange(self, envelope: bytes, *, wait_s: float = 20.0) -> Any:
        from heatgate.agent.cli.cmd import Endpoint, exchange
        from heatgate.agent.commands.envelope import decode_envelope

        assert self.broker is not None
        command = decode_envelope(envelope).command
        return exchange(
            Endpoint(host="127.0.0.1", port=self.broker.port, tls=None),
            self.gw.topic(f"cmd/{command}"),
            self.gw.topic("cmd/response"),
            envelope,
            wait_s=wait_s,
        )

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
        if self.backend is not None:
            self.backend.close()
        if self.subscriber is not None:
            self.subscriber.stop()
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> ShippedRig:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()
