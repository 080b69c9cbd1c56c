"""A real Mosquitto on a free loopback port with a generated config, for `heatgate demo` and the tests.

Modes: plain TCP; TLS (server certificate from a test CA); mutual TLS
(``require_certificate true``); password file + ACL. Readiness is awaited by connecting,
never by sleeping a fixed time. ``stop()``/``start()`` keep the port, for outage tests.
"""

from __future__ import annotations

import getpass
import random
import shutil
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from heatgate.agent.devtools.pki import Pki, make_pki
from heatgate.errors import HeatgateError

Mode = Literal["plain", "tls", "mtls", "auth"]


class BrokerError(HeatgateError):
    """The local broker could not be started."""


_LISTEN_PORTS = range(20000, 32768)
"""Where test servers listen: below Linux's default ephemeral range (32768-60999). A port the
kernel hands out with ``bind(0)`` is one it also hands to outgoing connections, so a server
started a moment later can find it taken by another process's client socket."""


def _ephemeral_ports() -> range:
    try:
        low, high = (int(part) for part in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        return range(32768, 61000)
    return range(low, high + 1)


def free_port() -> int:
    """A loopback TCP port free now, outside the ephemeral range (where one is left)."""
    ephemeral = _ephemeral_ports()
    candidates = [port for port in _LISTEN_PORTS if port not in ephemeral]
    for _ in range(50):
        port = random.choice(candidates) if candidates else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def mosquitto_binary() -> str:
    path = shutil.which("mosquitto") or ("/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None)
    if path is None:
        raise BrokerError("mosquitto is not installed: apt-get install mosquitto (make test does it as root)")
    return path


@dataclass
class Broker:
    directory: Path
    mode: Mode = "plain"
    persistence: bool = False
    acl: str | None = None
    """ACL file body for mode 'auth', e.g. ``user alice\\ntopic readwrite heatgate/#``."""
    users: dict[str, str] = field(default_factory=dict)
    port: int = 0
    pki: Pki | None = None
    process: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()
        if self.mode in ("tls", "mtls"):
            self.pki = make_pki(self.directory / "pki")
        self.log_path = self.directory / "mosquitto.log"
        self.config_path = self.directory / "mosquitto.conf"
        self.config_path.write_text(self._config())

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.mode in ("tls", "mtls") else "mqtt"
        return f"{scheme}://127.0.0.1:{self.port}"

    def _config(self) -> str:
        lines = [
            f"listener {self.port} 127.0.0.1",
            "log_dest file " + str(self.directory / "mosquitto.log"),
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 1000000",
            "max_inflight_messages 0",
            # Started as root, Mosquitto would drop to user 'mosquitto', which cannot read the
            # test's private temporary directory: stay the user that runs the tests.
            f"user {getpass.getuser()}",
        ]
        if self.persistence:
            lines += ["persistence true", f"persistence_location {self.directory}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        if self.mode == "auth":
            passwd = self.directory / "passwd"
            passwd.write_text("")
            passwd.chmod(0o600)
            for user, password in self.users.items():
                subprocess.run(
                    [shutil.which("mosquitto_passwd") or "mosquitto_passwd", "-b", str(passwd), user, password],
                    check=True,
                    capture_output=True,
                )
            lines += ["allow_anonymous false", f"password_file {passwd}"]
            if self.acl is not None:
                acl_path = self.directory / "acl"
                acl_path.write_text(self.acl)
                acl_path.chmod(0o600)
                lines.append(f"acl_file {acl_path}")
        else:
            lines.append("allow_anonymous true")
        if self.pki is not None:
            lines += [
                f"cafile {self.pki.ca_cert}",
                f"certfile {self.pki.server_cert}",
                f"keyfile {self.pki.server_key}",
                "tls_version tlsv1.2",
            ]
            if self.mode == "mtls":
                lines += ["require_certificate true", "use_identity_as_username true"]
        return "\n".join(lines) + "\n"

    def start(self, timeout_s: float = 10.0) -> None:
        assert self.process is None, "already running"
        self.process = subprocess.Popen(
            [mosquitto_binary(), "-c", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout_s
        while True:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                log = self.log_path.read_text() if self.log_path.exists() else ""
                self.process = None
                raise BrokerError(f"mosquitto exited at start: {err}{log}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BrokerError(f"mosquitto did not listen on {self.port} within {timeout_s} s") from None
                # Wait on the process, not a blind sleep: returns early if it dies.
                try:
                    self.process.wait(timeout=0.02)
                except subprocess.TimeoutExpired:
                    pass

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def kill(self) -> None:
        """Die at once, as in a crash (no clean session persistence)."""
        if self.process is None:
            return
        self.process.kill()
        self.process.wait()
        if self.process.stderr:
            self.process.stderr.close()
        self.process = None

    def client_tls_context(self, *, with_client_cert: bool = True) -> ssl.SSLContext:
        assert self.pki is not None
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.pki.ca_cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if with_client_cert and self.mode == "mtls":
            context.load_cert_chain(str(self.pki.client_cert), str(self.pki.client_key))
        return context

    def __enter__(self) -> Broker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
