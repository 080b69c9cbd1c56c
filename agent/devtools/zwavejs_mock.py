"""Z-Wave JS's own mock controller and mock nodes behind a real Z-Wave JS server, for tests
and benchmarks (from a checkout: it runs packaging/zwave-js's node_modules).

:class:`MockNetwork` starts ``agent/devtools/zwavejs_mock.cjs`` (the mock controller on a free
loopback TCP port) and ``@zwave-js/server`` (pointed at it, its API on another free loopback
port, its cache under the test's tmp dir), and stops both by PID. The npm packages come from
``packaging/zwave-js`` (``make test`` installs them from the lockfile with ``npm ci``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from heatgate.agent.devtools.localbroker import free_port

__all__ = ["NETWORK_KEYS", "MockNetwork", "node_missing_reason", "smartstart_qr"]

ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = ROOT / "packaging" / "zwave-js"
NODE_MODULES = PACKAGE_DIR / "node_modules"
MOCK_SCRIPT = Path(__file__).with_name("zwavejs_mock.cjs")
SERVER_SCRIPT = NODE_MODULES / "@zwave-js" / "server" / "dist-esm" / "bin" / "server.js"

NETWORK_KEYS = {
    "S0_Legacy": "0f" * 16,
    "S2_Unauthenticated": "1e" * 16,
    "S2_Authenticated": "2d" * 16,
    "S2_AccessControl": "3c" * 16,
}


def node_missing_reason() -> str | None:
    """Why the Z-Wave JS tests cannot run here, or None."""
    node = shutil.which("node")
    if node is None:
        return "Node.js is not installed (Z-Wave JS needs Node >= 20): apt-get install nodejs npm"
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    try:
        major = int(version.lstrip("v").split(".")[0])
    except ValueError:
        return f"cannot tell the Node.js version ({version!r})"
    if major < 20:
        return f"Node.js {version} is too old: Z-Wave JS needs Node >= 20"
    if not SERVER_SCRIPT.exists():
        return f"{NODE_MODULES} is not installed: run `make zwave-js` (npm ci --omit=dev in {PACKAGE_DIR})"
    return None


def smartstart_qr(dsk: str, *, requested_keys: int = 0b011) -> str:
    """A valid SmartStart QR code string for ``dsk`` (8 blocks of 5 digits), as printed on a device."""
    blocks = dsk.replace("-", "")
    product_type = "00" + "10" + f"{(0x07 << 8) | 0x01:05d}" + f"{0:05d}"
    product_id = "02" + "20" + f"{0x0086:05d}{0x0002:05d}{0x0064:05d}{(1 << 8) | 2:05d}"
    tail = f"{requested_keys:03d}" + blocks + product_type + product_id
    checksum = int.from_bytes(hashlib.sha1(tail.encode()).digest()[:2], "big")
    return "90" + "01" + f"{checksum:05d}" + tail


class MockNetwork:
    """The mock controller with ``nodes`` (zwavejs_mock.cjs's format) and a Z-Wave JS server on it."""

    def __init__(self, directory: Path, nodes: list[dict[str, Any]], *, home_id: int = 0x7E570001) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.cache_dir = directory / "cache"
        self.mock_config = directory / "mock.json"
        self.mock_config.write_text(json.dumps({"homeId": home_id, "securityKeys": NETWORK_KEYS, "nodes": nodes}))
        self.server_config = directory / "server.json"
        self.server_config.write_text(
            json.dumps(
                {
                    "securityKeys": NETWORK_KEYS,
                    "storage": {"cacheDir": str(self.cache_dir)},
                    "logConfig": {"enabled": False},
                    "enableSoftReset": False,
                }
            )
        )
        self.api_port = free_port()
        self.mock_port = 0
        self._mock: subprocess.Popen[bytes] | None = None
        self._server: subprocess.Popen[bytes] | None = None
        self._mock_out = directory / "mock.out"
        self._server_out = directory / "server.out"
        self._injected = 0

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.api_port}"

    def _env(self) -> dict[str, str]:
        return {**os.environ, "NODE_PATH": str(NODE_MODULES), "NODE_OPTIONS": "--max-old-space-size=256"}

    def start(self, timeout_s: float = 30.0) -> None:
        self.start_mock(timeout_s)
        self.start_server(timeout_s)

    def start_mock(self, timeout_s: float = 20.0) -> None:
        with self._mock_out.open("wb") as out:
            self._mock = subprocess.Popen(
                ["node", str(MOCK_SCRIPT), "--port", "0", "--config", str(self.mock_config)],
                stdin=subprocess.PIPE,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.directory,
            )
        line = self._wait_line(self._mock_out, "listening ", timeout_s, self._mock)
        self.mock_port = int(line.split()[1])

    def start_server(self, timeout_s: float = 30.0) -> None:
        mark = self._server_out.stat().st_size if self._server_out.exists() else 0
        with self._server_out.open("ab") as out:
            self._server = subprocess.Popen(
                [
                    "node",
                    str(SERVER_SCRIPT),
                    f"tcp://127.0.0.1:{self.mock_port}",
                    "--config",
                    str(self.server_config),
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.api_port),
                    "--disable-dns-sd",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env(),
                cwd=self.directory,
            )
        self._wait_line(self._server_out, "server listening", timeout_s, self._server, start=mark)

    def stop_server(self) -> None:
        self._stop(self._server)
        self._server = None

    def stop(self) -> None:
        self.stop_server()
        self._stop(self._mock)
        self._mock = None

    @staticmethod
    def _stop(process: subprocess.Popen[bytes] | None) -> None:
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(timeout=5)

    def _wait_line(
        self, path: Path, needle: str, timeout_s: float, process: subprocess.Popen[bytes] | None, start: int = 0
    ) -> str:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = path.read_bytes()[start:].decode(errors="replace") if path.exists() else ""
            for line in text.splitlines():
                if needle in line:
                    return line.strip()
            if process is not None and process.poll() is not None:
                raise RuntimeError(f"{path.name}: exited with {process.returncode}:\n{text[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{path.name}: no {needle!r} within {timeout_s} s:\n{text[-3000:]}")

    def inject(self, **message: Any) -> str:
        """Send one instruction to the mock (``op="sensor", node=2, …``); its answer line."""
        assert self._mock is not None and self._mock.stdin is not None
        mark = self._mock_out.stat().st_size
        self._injected += 1
        self._mock.stdin.write(json.dumps(message).encode() + b"\n")
        self._mock.stdin.flush()
        return self._wait_line(self._mock_out, f"ok {self._injected}", 10.0, self._mock, start=mark)

    def mock_output(self) -> str:
        return self._mock_out.read_text(errors="replace")
