"""ThingsBoard IoT Gateway as the peer: its own virtual environment, its config, the
``getSessionLimits`` answer a plain broker cannot give.

The peer is never a dependency of heatgate: it is installed from PyPI (with pip, the ordinary
client) into ``.bench-venvs/thingsboard`` on first use. Its Modbus connector pins pymodbus 3.9.2
and installs it at import time when missing; installing that version up front keeps the
measured process from running pip.

The gateway (tb_device_mqtt.py) publishes ``{"method": "getSessionLimits", ...}`` on
``v1/devices/me/rpc/request/<id>`` after connecting and sends no telemetry until an answer
arrives on ``v1/devices/me/rpc/response/<id>``; :class:`SessionLimitsResponder` answers with no
rate limits.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt

__all__ = ["PeerInstallError", "SessionLimitsResponder", "ensure_venv", "start_gateway", "write_config"]

PACKAGES = ["thingsboard-gateway", "pymodbus==3.9.2", "pyserial", "pyserial-asyncio"]
REQUEST_TOPIC = "v1/devices/me/rpc/request/"
RESPONSE_TOPIC = "v1/devices/me/rpc/response/"
NO_LIMITS = "0:0,"
SESSION_LIMITS = {
    "maxPayloadSize": 65536,
    "maxInflightMessages": 100,
    "rateLimits": {"messages": NO_LIMITS, "telemetryMessages": NO_LIMITS, "telemetryDataPoints": NO_LIMITS},
    "gatewayRateLimits": {"messages": NO_LIMITS, "telemetryMessages": NO_LIMITS, "telemetryDataPoints": NO_LIMITS},
}


class PeerInstallError(Exception):
    def __init__(self, command: list[str], output: str) -> None:
        super().__init__(f"{' '.join(command)} failed:\n{output[-3000:]}")
        self.command = command
        self.output = output


def ensure_venv(cache_dir: Path, *, timeout_s: float = 900.0) -> Path:
    """The peer's python, installing it into ``cache_dir/thingsboard`` if needed."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    ignore = cache_dir / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n")
    venv = cache_dir / "thingsboard"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", "import thingsboard_gateway, pymodbus, serial_asyncio; print(pymodbus.__version__)"]
    if python.exists() and subprocess.run(probe, capture_output=True, text=True).stdout.strip() == "3.9.2":
        return python
    for command in (
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", *PACKAGES],
    ):
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise PeerInstallError(command, done.stdout + done.stderr)
    return python


def package_dir(python: Path) -> Path:
    out = subprocess.run(
        [str(python), "-c", "import thingsboard_gateway, os; print(os.path.dirname(thingsboard_gateway.__file__))"],
        capture_output=True,
        text=True,
        check=True,
    )
    return Path(out.stdout.strip())


def write_config(python: Path, root: Path, *, broker_port: int, connector: dict[str, Any]) -> Path:
    """A config directory (the package's own, with our tb_gateway.json and modbus.json)."""
    config_dir = root / "config"
    shutil.copytree(package_dir(python) / "config", config_dir)
    main = json.loads((config_dir / "tb_gateway.json").read_text())
    tb = main["thingsboard"]
    tb.update(host="127.0.0.1", port=broker_port, remoteShell=False, remoteConfiguration=False)
    tb["security"] = {"type": "accessToken", "accessToken": "bench-peer-token"}
    tb["statistics"]["enable"] = False
    main["storage"]["type"] = "memory"
    main["connectors"] = [{"type": "modbus", "name": "Modbus", "configuration": "modbus.json"}]
    (config_dir / "tb_gateway.json").write_text(json.dumps(main, indent=2))
    (config_dir / "modbus.json").write_text(json.dumps(connector, indent=2))
    # Console logging at WARNING: log volume is not what is compared.
    logs = json.loads((config_dir / "logs.json").read_text())
    for logger in logs.get("loggers", {}).values():
        logger["level"] = "WARNING"
    if "root" in logs:
        logs["root"]["level"] = "WARNING"
    (config_dir / "logs.json").write_text(json.dumps(logs, indent=2))
    return config_dir


def start_gateway(python: Path, root: Path, config_dir: Path) -> subprocess.Popen[bytes]:
    log = open(root / "thingsboard.log", "wb")  # noqa: SIM115 - handed to the process
    env = {**os.environ, "TB_GW_CONFIG_DIR": str(config_dir) + os.sep}
    process = subprocess.Popen(
        [str(python), "-m", "thingsboard_gateway.tb_gateway"],
        cwd=root,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return process


class SessionLimitsResponder:
    """Answers the peer's ``getSessionLimits`` RPC on the broker (paho network thread)."""

    def __init__(self, host: str, port: int) -> None:
        self.answered = 0
        self.requests: list[str] = []
        self._ready = threading.Event()
        self._client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"bench-tb-rpc-{os.getpid()}")
        self._client.on_connect = lambda c, _u, _f, _rc, _p: c.subscribe(REQUEST_TOPIC + "+", qos=1)
        self._client.on_subscribe = lambda *_a: self._ready.set()
        self._client.on_message = self._on_message
        self._client.connect(host, port)
        self._client.loop_start()
        if not self._ready.wait(10):
            self.close()
            raise RuntimeError("the getSessionLimits responder could not subscribe")

    def _on_message(self, client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage) -> None:
        request_id = message.topic[len(REQUEST_TOPIC) :]
        try:
            method = json.loads(message.payload).get("method")
        except (ValueError, AttributeError):
            return
        self.requests.append(str(method))
        if method == "getSessionLimits":
            client.publish(RESPONSE_TOPIC + request_id, json.dumps(SESSION_LIMITS), qos=1)
            self.answered += 1

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
