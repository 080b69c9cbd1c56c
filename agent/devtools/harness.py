"""A provisioned temporary gateway and the agent as a child process, for fault injection.

    gateway = Gateway(tmp_path / "gw", broker_url=broker.url, sources_toml=load_sources(...))
    gateway.provision()
    gateway.start()                      # `python -m heatgate run --config …` in its own session
    gateway.wait_status(lambda s: …)     # the agent's own `heatgate status` document
    gateway.kill9()                      # or gateway.stop() (SIGTERM, exit code)
    gateway.committed_ids()              # ids in buffer.db, decrypted (agent stopped)
    gateway.integrity()                  # PRAGMA integrity_check

Simulators run as their own processes too (``spawn_sim``), as in the field and in ``heatgate
demo``. Everything started here is stopped by ``close()`` (or the context manager).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from heatgate.agent.devtools.demo import listening, stop_process
from heatgate.agent.provision import Answers, provision
from heatgate.agent.status import StatusError, query_status
from heatgate.errors import HeatgateError

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

GATEWAY_ID = "gw-fault-0001"


class HarnessError(HeatgateError):
    """The harness could not bring something up; the message says what, with the log tail."""


def wait_until(predicate: Callable[[], Any], *, timeout_s: float, what: str, poll_s: float = 0.05) -> Any:
    """Poll ``predicate`` until it returns something truthy; raise HarnessError on timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise HarnessError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(poll_s)


def fast_policy(window_s: int = 1) -> str:
    """The shipped policy with every aggregation window (telemetry, analytics, the smart meter's
    daily values) shortened to ``window_s``, so that records are committed continuously."""
    from heatgate.config import data_path

    text = data_path("privacy.toml").read_text()
    for stream in ("telemetry", "analytics"):
        section = text.find(f"[streams.{stream}]")
        match = re.compile(r"time_granularity_s = \d+").search(text, section)
        if section < 0 or match is None:
            raise HarnessError(f"the shipped policy has no time_granularity_s for {stream}")
        text = text[: match.start()] + f"time_granularity_s = {window_s}" + text[match.end() :]
    text = re.sub(r"(\n\s*window_s = )86400", rf"\g<1>{window_s}", text)
    text = re.sub(r"(\n\s*consent_window_s = )900", rf"\g<1>{window_s}", text)
    return text


def load_sources(
    *,
    heatpump_port: int | None = None,
    meter_port: int | None = None,
    p1_link: Path | None = None,
    zwave_link: Path | None = None,
    modbus_interval_s: float = 10.0,
) -> str:
    """``[[sources]]`` tables for the simulators that are given."""
    parts = []
    for name, port, profile in (("heatpump", heatpump_port, "sim-heatpump"), ("meter", meter_port, "sdm630")):
        if port is None:
            continue
        parts.append(f"""
[[sources]]
type = "modbus-tcp"
name = "{name}"
host = "127.0.0.1"
port = {port}
  [[sources.devices]]
  name = "{name}1"
  unit_id = 1
  profile = "{profile}"
  interval_s = {modbus_interval_s}
""")
    if p1_link is not None:
        parts.append(f'\n[[sources]]\ntype = "p1"\nname = "smartmeter"\nport = "{p1_link}"\ndsmr_version = "5"\n')
    if zwave_link is not None:
        parts.append(f"""
[[sources]]
type = "zwave"
name = "zwave"
port = "{zwave_link}"
  [[sources.nodes]]
  node_id = 2
  name = "living-room"
  device_type = "multisensor"
""")
    return "".join(parts)


def spawn_sim(log_path: Path, *args: str) -> subprocess.Popen[bytes]:
    """``python -m heatgate sim …`` in its own session, output to ``log_path``."""
    with log_path.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "heatgate", "sim", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def published_records(payloads: Iterable[bytes]) -> list[tuple[str, dict[str, Any]]]:
    """Every record of published record messages, with its message's stream (state messages
    have none), duplicates kept."""
    records: list[tuple[str, dict[str, Any]]] = []
    for payload in payloads:
        try:
            document = json.loads(payload)
        except ValueError:
            continue
        if isinstance(document, dict):
            stream = str(document.get("stream"))
            records.extend((stream, r) for r in document.get("records", []) if isinstance(r, dict))
    return records


def published_ids(payloads: Iterable[bytes]) -> list[str]:
    """Every record id in published record messages (state messages have none), duplicates kept."""
    return [record["id"] for _, record in published_records(payloads) if "id" in record]


@dataclass
class Gateway:
    """One provisioned gateway in ``root`` and its agent process."""

    root: Path
    broker_url: str
    sources_toml: str = ""
    state_dir: Path | None = None
    commit_interval_s: float = 0.5
    policy_text: str | None = None
    extra_toml: str = ""
    process: subprocess.Popen[bytes] | None = None
    runs: int = 0
    _logs: list[Path] = field(default_factory=list)

    @property
    def config_path(self) -> Path:
        return self.root / "heatgate.toml"

    @property
    def state(self) -> Path:
        return self.state_dir or self.root / "state"

    @property
    def db_path(self) -> Path:
        return self.state / "buffer.db"

    @property
    def socket_path(self) -> Path:
        return self.root / "status.sock"

    @property
    def policy_path(self) -> Path:
        return self.root / "privacy.toml"

    def provision(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        provision(
            Answers(
                gateway_id=GATEWAY_ID,
                region="3511 AB",
                state_dir=self.state,
                config_path=self.config_path,
                broker_url=self.broker_url,
                sources_toml=self.sources_toml,
            )
        )
        self.policy_path.write_text(self.policy_text if self.policy_text is not None else fast_policy())
        with self.config_path.open("a") as handle:
            handle.write(
                f'\n[privacy]\npolicy_file = "{self.policy_path}"\n'
                f"\n[buffer]\ncommit_interval_s = {self.commit_interval_s}\n"
                f'\n[status]\nsocket_path = "{self.socket_path}"\n' + self.extra_toml
            )

    # ---- the agent process -----------------------------------------------------------------

    def start(self) -> subprocess.Popen[bytes]:
        if self.running:
            raise HarnessError("the agent is already running")
        self.runs += 1
        log = self.root / f"agent-{self.runs}.log"
        self._logs.append(log)
        with log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "heatgate", "run", "--config", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self.process

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def kill9(self) -> None:
        """SIGKILL, then reap: nothing of the agent runs any more when this returns."""
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM and wait for a clean exit (SIGKILL if it does not come); the exit code."""
        return stop_process(self.process, timeout_s=timeout_s)

    def log_tail(self, chars: int = 3000) -> str:
        return self._logs[-1].read_text(errors="replace")[-chars:] if self._logs else ""

    # ---- what it says -----------------------------------------------------------------------

    def status(self) -> dict[str, Any] | None:
        """The agent's status document, or None if it does not answer (yet)."""
        try:
            return query_status(self.socket_path, timeout_s=5.0)
        except StatusError:
            return None

    def wait_status(
        self, predicate: Callable[[dict[str, Any]], bool], *, timeout_s: float = 20.0, what: str = "a status"
    ) -> dict[str, Any]:
        """Poll the status socket until ``predicate(document)`` holds; fail if the agent exits.
        A predicate that reads a part not there yet (KeyError, IndexError, TypeError) does not hold."""
        last: list[dict[str, Any]] = []

        def check() -> dict[str, Any] | None:
            if self.process is not None and self.process.poll() is not None:
                raise HarnessError(
                    f"the agent exited with {self.process.returncode} while waiting for {what}:\n" + self.log_tail()
                )
            document = self.status()
            if document is not None:
                last[:] = [document]
                try:
                    holds = predicate(document)
                except (KeyError, IndexError, TypeError):
                    holds = False  # a part the predicate reads is not there yet (a source still starting)
                if holds:
                    return document
            return None

        try:
            result: dict[str, Any] = wait_until(check, timeout_s=timeout_s, what=what, poll_s=0.2)
        except HarnessError as exc:
            raise HarnessError(f"{exc}; last status: {json.dumps(last[0]) if last else None}") from None
        return result

    # ---- the database, while the agent is stopped --------------------------------------------

    def integrity(self) -> str:
        """``PRAGMA integrity_check`` of buffer.db (WAL included), read-only."""
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True)
        try:
            rows = conn.execute("PRAGMA integrity_check").fetchall()
        finally:
            conn.close()
        return "; ".join(str(r[0]) for r in rows)

    def committed_ids(self) -> set[str]:
        """Every record id stored in buffer.db, decrypted through the buffer itself. Only while
        the agent is not running (the buffer has one writer)."""
        if self.running:
            raise HarnessError("committed_ids() needs the agent stopped")
        return {record.id for record in self.export()}

    def export(self) -> list[Any]:
        from heatgate.agent.config import load_config
        from heatgate.agent.privacy.policy import load_policy
        from heatgate.buffer.adapter import open_buffer
        from heatgate.buffer.keys import load_master_key

        config = load_config(self.config_path).config

        async def read() -> list[Any]:
            key = load_master_key(config.master_key_path, None)
            buffer = await open_buffer(
                config.buffer_path,
                key,
                cap_bytes=config.buffer.cap_bytes,
                cipher=config.buffer.cipher,
                retention_s=load_policy(config.policy_path).retention_s(),
            )
            try:
                return await buffer.export_all()
            finally:
                await buffer.close()

        return asyncio.run(read())

    def set_broker_url(self, url: str) -> None:
        """Point the (stopped or next) agent at another broker: rewrites ``[mqtt] url``."""
        text = self.config_path.read_text()
        self.config_path.write_text(re.sub(r'(?m)^url = ".*"$', f'url = "{url}"', text, count=1))

    def close(self) -> None:
        if self.running:
            self.stop(timeout_s=10.0)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


HOME_READINGS_PER_S = 33.5
"""Home load, in readings/s: a DSMR 5 meter (≈30 readings per telegram, one telegram/s), a heat
pump (20 readings per poll every 10 s) and an energy meter (15 per poll every 10 s)."""


@dataclass
class LoadRig:
    """A Mosquitto, simulators at ``load`` x home rates, a provisioned gateway and a subscriber.

    ``load`` = 100: P1 telegrams every 10 ms, heat pump and meter polled every 100 ms (≈3,350
    readings/s). Aggregation windows of 1 s make that ≈180 committed records/s."""

    root: Path
    load: float = 100.0
    with_p1: bool = True
    broker: Any = None
    gateway: Gateway | None = None
    subscriber: Any = None
    sims: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self) -> Gateway:
        from heatgate.agent.devtools.localbroker import Broker, free_port
        from heatgate.agent.devtools.subscriber import Subscriber

        self.root.mkdir(parents=True, exist_ok=True)
        self.broker = Broker(self.root / "broker")
        self.broker.start()
        heatpump, meter = free_port(), free_port()
        p1 = self.root / "p1" if self.with_p1 else None
        self.sims.append(spawn_sim(self.root / "sim-heatpump.log", "heatpump", "--port", str(heatpump)))
        self.sims.append(spawn_sim(self.root / "sim-meter.log", "meter", "--port", str(meter)))
        if p1 is not None:
            self.sims.append(
                spawn_sim(
                    self.root / "sim-p1.log", "p1", "--link", str(p1), "--interval-s", f"{max(0.01, 1.0 / self.load):g}"
                )
            )
        wait_until(
            lambda: listening(heatpump) and listening(meter) and (p1 is None or p1.exists()),
            timeout_s=20,
            what="the simulators",
        )
        self.gateway = Gateway(
            self.root / "gw",
            broker_url=self.broker.url,
            sources_toml=load_sources(
                heatpump_port=heatpump, meter_port=meter, p1_link=p1, modbus_interval_s=10.0 / self.load
            ),
        )
        self.gateway.provision()
        self.subscriber = Subscriber("127.0.0.1", self.broker.port, ["heatgate/#"]).start()
        return self.gateway

    def received_ids(self) -> list[str]:
        with self.subscriber._cond:
            payloads = [m.payload for m in self.subscriber.messages]
        return published_ids(payloads)

    def close(self) -> None:
        if self.gateway is not None:
            self.gateway.close()
        if self.subscriber is not None:
            self.subscriber.stop()
        for sim in self.sims:
            stop_process(sim)
        if self.broker is not None:
            self.broker.stop()

    def __enter__(self) -> LoadRig:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class KillRound:
    outage: bool
    after_s: float
    integrity: str
    in_db: int
    """Records in buffer.db after the kill (committed, not yet deleted)."""
    undelivered: int
    """Of those, how many the subscriber had not received when the agent was killed."""


@dataclass
class KillResult:
    rounds: list[KillRound]
    committed: int
    """Distinct ids seen in the database after any kill."""
    missing: list[str]
    """Committed ids that never reached the subscriber."""
    received: int
    received_distinct: int
    final_integrity: str
    final_exit_code: int | None
    final_queued: int
    drain_s: float


def kill_rounds(
    rig: LoadRig,
    rounds: int,
    *,
    seed: int = 1,
    min_s: float = 0.3,
    max_s: float = 3.0,
    outage_share: float = 0.4,
    drain_timeout_s: float = 60.0,
    after_ready: bool = False,
    on_round: Callable[[int, KillRound], None] | None = None,
) -> KillResult:
    """``rounds`` x (start the agent, let it run a random time, ``kill -9``, check the file, read
    the committed ids). In a share of the rounds the agent is pointed at a port where no broker
    listens, so that a backlog is committed and killed with it. Then one clean run against the
    broker until every committed id arrived, and SIGTERM. ``after_ready``: the random time runs
    from the moment the status socket answers (on a busy machine start-up alone can take
    seconds), else from the start of the process (kills during start-up included)."""
    import random

    from heatgate.agent.devtools.localbroker import free_port

    gateway = rig.gateway
    assert gateway is not None
    rng = random.Random(seed)
    committed: set[str] = set()
    results: list[KillRound] = []
    for number in range(rounds):
        outage = rng.random() < outage_share
        gateway.set_broker_url(f"mqtt://127.0.0.1:{free_port()}" if outage else rig.broker.url)
        after_s = rng.uniform(min_s, max_s)
        gateway.start()
        if after_ready:
            gateway.wait_status(lambda _s: True, timeout_s=60, what="the agent up")
        time.sleep(after_s)
        exited = gateway.process.poll() if gateway.process is not None else None
        if exited is not None:
            raise HarnessError(f"the agent exited with {exited} before the kill:\n{gateway.log_tail()}")
        gateway.kill9()
        delivered = set(rig.received_ids())
        integrity = gateway.integrity()
        ids = gateway.committed_ids()
        committed |= ids
        result = KillRound(
            outage=outage, after_s=after_s, integrity=integrity, in_db=len(ids), undelivered=len(ids - delivered)
        )
        results.append(result)
        if on_round is not None:
            on_round(number, result)
    gateway.set_broker_url(rig.broker.url)
    started = time.monotonic()
    gateway.start()
    try:
        wait_until(
            lambda: committed <= set(rig.received_ids()),
            timeout_s=drain_timeout_s,
            what="every committed record at the subscriber",
            poll_s=0.2,
        )
    except HarnessError:
        pass  # reported as missing below
    drain_s = time.monotonic() - started
    document = gateway.wait_status(lambda s: s["broker"].get("connected"), timeout_s=20)
    queued = sum(s.get("queued", 0) for s in document["buffer"]["streams"].values())
    exit_code = gateway.stop()
    received = rig.received_ids()
    return KillResult(
        rounds=results,
        committed=len(committed),
        missing=sorted(committed - set(received)),
        received=len(received),
        received_distinct=len(set(received)),
        final_integrity=gateway.integrity(),
        final_exit_code=exit_code,
        final_queued=queued,
        drain_s=drain_s,
    )
