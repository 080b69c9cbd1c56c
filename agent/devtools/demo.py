"""``heatgate demo``: the whole system on one machine.

Starts, each as its own process exactly as in the field: a Mosquitto broker on a free
loopback port with mutual TLS (a throw-away CA), the heat-pump simulator over Modbus TCP
(with a fault injected after a few seconds), the energy-meter simulator over Modbus RTU on a
pseudo-terminal, the P1 and Z-Wave simulators on pseudo-terminals, a provisioned temporary
state directory, the agent, and `heatgate tail` as the backend's live view. Everything is
stopped and removed at the end (``--duration-s``, Ctrl-C, or SIGTERM).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from heatgate.agent.devtools.localbroker import Broker, BrokerError, free_port
from heatgate.agent.devtools.pki import issue, sign_csr
from heatgate.agent.provision import Answers, provision
from heatgate.errors import HeatgateError

__all__ = ["Demo", "DemoError"]

GATEWAY_ID = "gw-demo-0001"
FAULT_AT_S = 8


class DemoError(HeatgateError):
    """The demo could not be set up; the message says why in one line."""


@dataclass
class Demo:
    root: Path
    fault_at_s: int = FAULT_AT_S
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    broker: Broker | None = None
    heatpump_port: int = 0

    @property
    def config_path(self) -> Path:
        return self.root / "heatgate.toml"

    @property
    def sim_dir(self) -> Path:
        return self.root / "sim"

    def _spawn(self, name: str, *args: str, log: bool = True) -> subprocess.Popen[bytes]:
        out = open(self.root / f"{name}.log", "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "-m", "heatgate", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.processes[name] = process
        return process

    def _wait_for(self, what: str, ready: object, timeout_s: float = 15.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not ready():  # type: ignore[operator]
            for name, process in self.processes.items():
                if process.poll() is not None:
                    tail = (self.root / f"{name}.log").read_text(errors="replace")[-2000:]
                    raise DemoError(f"{name} exited with {process.returncode} while waiting for {what}:\n{tail}")
            if time.monotonic() > deadline:
                raise DemoError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def start_broker(self) -> None:
        self.broker = Broker(self.root / "broker", mode="mtls")
        try:
            self.broker.start()
        except BrokerError as exc:
            raise DemoError(str(exc)) from None
        assert self.broker.pki is not None
        issue(self.broker.pki.ca_cert, self.broker.pki.ca_key, self.root / "backend", "backend-demo", server=False)

    def start_simulators(self) -> None:
        self.sim_dir.mkdir(parents=True, exist_ok=True)
        self.heatpump_port = free_port()
        self._spawn(
            "sim-heatpump", "sim", "heatpump", "--port", str(self.heatpump_port), "--fault", f"3@{self.fault_at_s}"
        )
        self._spawn("sim-meter", "sim", "meter", "--rtu", "--link", str(self.sim_dir / "meter"))
        self._spawn("sim-p1", "sim", "p1", "--link", str(self.sim_dir / "p1"))
        self._spawn("sim-zwave", "sim", "zwave", "--link", str(self.sim_dir / "zwave"))
        links = [self.sim_dir / name for name in ("meter", "p1", "zwave")]
        self._wait_for("the simulators' pseudo-terminals", lambda: all(p.exists() for p in links))
        self._wait_for("the heat-pump simulator", lambda: listening(self.heatpump_port))

    def provision(self) -> None:
        assert self.broker is not None and self.broker.pki is not None
        pki = self.broker.pki
        keys = self.root / "backend-keys"
        keys.mkdir(parents=True, exist_ok=True)
        for name in ("command", "approval"):
            private = ed25519.Ed25519PrivateKey.generate()
            (keys / f"{name}.key").write_bytes(
                private.private_bytes(
                    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
                )
            )
            (keys / f"{name}.key").chmod(0o600)
            (keys / f"{name}.pub").write_bytes(
                private.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        state = self.root / "state"
        answers = Answers(
            gateway_id=GATEWAY_ID,
            region="3511 AB",
            state_dir=state,
            config_path=self.config_path,
            broker_url=self.broker.url,
            ca_file=pki.ca_cert,
            command_public_key=keys / "command.pub",
            approval_public_key=keys / "approval.pub",
            sources_toml=self._sources_toml(),
        )
        provision(answers)
        # The demo's CA signs the gateway's request, as the service company's CA would.
        sign_csr(pki.ca_cert, pki.ca_key, state / "keys" / "device.csr", state / "keys" / "device.crt")
        policy = self.root / "privacy-demo.toml"
        policy.write_text(demo_policy())
        with self.config_path.open("a") as handle:
            handle.write(f'\n[privacy]\npolicy_file = "{policy}"\n\n[buffer]\ncommit_interval_s = 0.5\n')

    def _sources_toml(self) -> str:
        return f"""
[[sources]]
type = "modbus-tcp"
name = "heatpump"
host = "127.0.0.1"
port = {self.heatpump_port}
  [[sources.devices]]
  name = "hp1"
  unit_id = 1
  profile = "sim-heatpump"
  interval_s = 2.0

[[sources]]
type = "modbus-rtu"
name = "meter-bus"
port = "{self.sim_dir / "meter"}"
baudrate = 9600
  [[sources.devices]]
  name = "meter1"
  unit_id = 1
  profile = "sdm630"
  interval_s = 2.0

[[sources]]
type = "p1"
name = "smartmeter"
port = "{self.sim_dir / "p1"}"
dsmr_version = "5"

[[sources]]
type = "zwave"
name = "zwave"
port = "{self.sim_dir / "zwave"}"
  [[sources.nodes]]
  node_id = 2
  name = "living-room"
  device_type = "multisensor"
  [[sources.nodes]]
  node_id = 3
  name = "washing-machine"
  device_type = "energy-switch"
"""

    def start_agent(self) -> subprocess.Popen[bytes]:
        return self._spawn("agent", "run", "--config", str(self.config_path))

    def tail_command(self, *, json_lines: bool, duration_s: float | None) -> list[str]:
        assert self.broker is not None and self.broker.pki is not None
        backend = self.root / "backend"
        command = [
            sys.executable,
            "-m",
            "heatgate",
            "tail",
            "--config",
            str(self.config_path),
            "--fleet",
            "--ca",
            str(self.broker.pki.ca_cert),
            "--cert",
            str(backend / "backend-demo.crt"),
            "--key",
            str(backend / "backend-demo.key"),
        ]
        if json_lines:
            command.append("--json")
        if duration_s is not None:
            command += ["--duration-s", str(duration_s)]
        return command

    def stop(self) -> None:
        """The agent first (SIGTERM: it commits and says offline), then the simulators, then the broker."""
        stop_process(self.processes.pop("agent", None), timeout_s=15)
        for process in self.processes.values():
            if process.poll() is None:
                process.terminate()
        for process in self.processes.values():
            stop_process(process, timeout_s=5)
        self.processes.clear()
        if self.broker is not None:
            self.broker.stop()


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:``port``."""
    import socket

    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
        return True
    return False


def stop_process(process: subprocess.Popen[bytes] | None, *, timeout_s: float = 10.0) -> int | None:
    """SIGTERM, then SIGKILL after ``timeout_s``; always reaped. Returns the exit code."""
    if process is None:
        return None
    if process.poll() is None:
        process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        process.terminate()
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


DEMO_WINDOWS_S = {"telemetry": 10, "analytics": 20}
DEMO_SMART_METER_WINDOW_S = 20


def demo_policy() -> str:
    """The shipped policy with windows of seconds instead of minutes, hours and days, so that
    aggregates reach the backend's view while one watches. Everything else is unchanged."""
    import re

    from heatgate.config import data_path

    text = data_path("privacy.toml").read_text()
    for stream, window_s in DEMO_WINDOWS_S.items():
        section = text.find(f"[streams.{stream}]")
        match = re.compile(r"time_granularity_s = \d+").search(text, section)
        if section < 0 or match is None:
            raise DemoError(f"the shipped policy has no time_granularity_s for {stream}")
        text = text[: match.start()] + f"time_granularity_s = {window_s}" + text[match.end() :]
    text = re.sub(r"(\n\s*window_s = )86400", rf"\g<1>{DEMO_SMART_METER_WINDOW_S}", text)
    text = re.sub(r"(\n\s*consent_window_s = )900", r"\g<1>10", text)
    return "# heatgate demo: the shipped policy with windows shortened to seconds.\n" + text


@contextlib.contextmanager
def running_demo(root: Path | None = None, *, fault_at_s: int = FAULT_AT_S) -> Iterator[Demo]:
    """Set up the whole system; tear everything down on exit. Used by the CLI and the tests."""
    owned = root is None
    base = Path(tempfile.mkdtemp(prefix="heatgate-demo-")) if root is None else root
    demo = Demo(base, fault_at_s=fault_at_s)
    try:
        demo.start_broker()
        demo.start_simulators()
        demo.provision()
        demo.start_agent()
        yield demo
    finally:
        demo.stop()
        if owned and not os.environ.get("HEATGATE_DEMO_KEEP"):
            import shutil

            shutil.rmtree(base, ignore_errors=True)
