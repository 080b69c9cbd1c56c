"""Installer tools: provision (idempotent, --force), doctor against a healthy and a broken setup."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import NameOID

from heatgate.agent.devtools.localbroker import Broker
from heatgate.agent.devtools.pki import sign_csr

GATEWAY = "gw-inst-0001"


def heatgate(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "heatgate", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )


def _ed25519_pub(path: Path) -> Path:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    path.write_bytes(key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    return path


def _provision(tmp_path: Path, broker_url: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return heatgate(
        "provision",
        "--gateway-id",
        GATEWAY,
        "--region",
        "3511 AB",
        "--broker-url",
        broker_url,
        "--state-dir",
        str(tmp_path / "state"),
        "--config-out",
        str(tmp_path / "heatgate.toml"),
        *extra,
    )


def test_provision_creates_keys_csr_and_config(tmp_path: Path) -> None:
    command = _ed25519_pub(tmp_path / "command.pub")
    result = _provision(tmp_path, "mqtts://broker.example:8883", "--command-key", str(command))
    assert result.returncode == 0, result.stderr
    keys = tmp_path / "state" / "keys"
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((keys / "master.key").stat().st_mode) == 0o600
    assert stat.S_IMODE((keys / "device.key").stat().st_mode) == 0o600
    assert len((keys / "master.key").read_bytes()) >= 32
    csr = x509.load_pem_x509_csr((keys / "device.csr").read_bytes())
    assert csr.is_signature_valid
    # The subject is the gateway id and nothing else: no customer data.
    assert [(a.oid, a.value) for a in csr.subject] == [(NameOID.COMMON_NAME, GATEWAY)]
    assert (keys / "command.pub").read_bytes() == command.read_bytes()
    check = heatgate("check-config", "--offline", "--config", str(tmp_path / "heatgate.toml"))
    assert check.returncode == 0, check.stderr
    assert "device.crt" in result.stdout  # tells the installer where the signed certificate goes
    # On this machine the certificate is still missing until the CA signed the request.
    here = heatgate("check-config", "--config", str(tmp_path / "heatgate.toml"))
    assert here.returncode == 2, here.stdout
    crt = keys / "device.crt"
    assert f"mqtt.cert_file: {crt}: no such file (have the broker's CA sign {keys / 'device.csr'}" in here.stderr


def test_provision_is_idempotent_and_force_replaces_keys(tmp_path: Path) -> None:
    assert _provision(tmp_path, "mqtt://127.0.0.1:1883").returncode == 0
    keys = tmp_path / "state" / "keys"
    master, device = (keys / "master.key").read_bytes(), (keys / "device.key").read_bytes()
    again = _provision(tmp_path, "mqtt://127.0.0.1:1883")
    assert again.returncode == 0, again.stderr
    assert "kept" in again.stdout and "created" not in again.stdout
    assert (keys / "master.key").read_bytes() == master
    assert (keys / "device.key").read_bytes() == device
    forced = _provision(tmp_path, "mqtt://127.0.0.1:1883", "--force")
    assert forced.returncode == 0, forced.stderr
    assert (keys / "master.key").read_bytes() != master
    assert (keys / "device.key").read_bytes() != device


def test_provision_refuses_a_different_pinned_key_without_force(tmp_path: Path) -> None:
    assert (
        _provision(tmp_path, "mqtt://127.0.0.1:1883", "--command-key", str(_ed25519_pub(tmp_path / "a.pub"))).returncode
        == 0
    )
    other = _provision(tmp_path, "mqtt://127.0.0.1:1883", "--command-key", str(_ed25519_pub(tmp_path / "b.pub")))
    assert other.returncode == 2 and "already pins a different" in other.stderr


def test_provision_missing_answers_exit_2(tmp_path: Path) -> None:
    result = heatgate("provision", "--state-dir", str(tmp_path / "s"), "--config-out", str(tmp_path / "c.toml"))
    assert result.returncode == 2
    assert "--gateway-id" in result.stderr and "--broker-url" in result.stderr


def test_doctor_healthy_then_broken(tmp_path: Path, broker_factory: Callable[..., Broker], heatpump_sim: int) -> None:
    broker = broker_factory("mtls")
    assert broker.pki is not None
    sources = tmp_path / "sources.toml"
    sources.write_text(
        f'[[sources]]\ntype = "modbus-tcp"\nname = "heatpump"\nhost = "127.0.0.1"\nport = {heatpump_sim}\n'
        '[[sources.devices]]\nname = "hp1"\nunit_id = 1\nprofile = "sim-heatpump"\ninterval_s = 1.0\n'
    )
    result = _provision(tmp_path, broker.url, "--ca", str(broker.pki.ca_cert), "--sources", str(sources))
    assert result.returncode == 0, result.stderr
    keys = tmp_path / "state" / "keys"
    config = str(tmp_path / "heatgate.toml")

    missing_cert = heatgate("doctor", "--config", config, "--probe-timeout-s", "10")
    assert missing_cert.returncode == 1
    assert "device certificate" in missing_cert.stdout and "fix:" in missing_cert.stdout

    sign_csr(broker.pki.ca_cert, broker.pki.ca_key, keys / "device.csr", keys / "device.crt")
    healthy = heatgate("doctor", "--config", config, "--probe-timeout-s", "10")
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert "source heatpump: answers" in healthy.stdout
    assert "accepted the connection over mutual TLS" in healthy.stdout

    os.chmod(keys / "master.key", 0o644)
    broker.stop()
    broken = heatgate("doctor", "--config", config, "--probe-timeout-s", "5")
    assert broken.returncode == 1
    assert "chmod 600" in broken.stdout
    assert "✘ broker" in broken.stdout


def _buffer_with_records(state: Path, count: int) -> Path:
    """A buffer made by the buffer itself, under the provisioned master key, holding ``count`` records."""
    import asyncio
    import time

    from heatgate.buffer.adapter import open_buffer
    from heatgate.buffer.api import NewRecord
    from heatgate.buffer.keys import load_master_key

    path = state / "buffer.db"

    async def fill() -> None:
        buffer = await open_buffer(
            path, load_master_key(state / "keys" / "master.key"), cap_bytes=2**24, retention_s={"telemetry": 3600}
        )
        records = [
            NewRecord(
                id=f"r{i}", stream="telemetry", route="telemetry", priority=2, created_s=time.time(), payload=b"{}"
            )
            for i in range(count)
        ]
        await buffer.put(records)
        await buffer.close()

    asyncio.run(fill())
    return path


def test_force_refuses_to_orphan_a_buffer_and_doctor_catches_a_replaced_key(tmp_path: Path) -> None:
    assert _provision(tmp_path, "mqtt://127.0.0.1:1").returncode == 0
    state, config = tmp_path / "state", str(tmp_path / "heatgate.toml")
    buffer = _buffer_with_records(state, 3)
    key_before = (state / "keys" / "master.key").read_bytes()

    opens = heatgate("doctor", "--config", config, "--probe-timeout-s", "1")
    assert "✔ master key opens the buffer" in opens.stdout and "3 record(s) waiting" in opens.stdout, opens.stdout

    refused = _provision(tmp_path, "mqtt://127.0.0.1:1", "--force")
    assert refused.returncode == 2
    assert "holds 3 record(s)" in refused.stderr and "--discard-buffer" in refused.stderr, refused.stderr
    assert (state / "keys" / "master.key").read_bytes() == key_before and buffer.exists()

    # A key replaced behind provision's back (a restored backup, a copy from another gateway).
    (state / "keys" / "master.key").write_text(os.urandom(32).hex() + "\n")
    mismatch = heatgate("doctor", "--config", config, "--probe-timeout-s", "1")
    assert mismatch.returncode == 1
    assert "✘ master key opens the buffer" in mismatch.stdout, mismatch.stdout
    assert "created with another master key" in mismatch.stdout and "--discard-buffer" in mismatch.stdout
    assert "all" not in mismatch.stdout.splitlines()[-1]

    discarded = _provision(tmp_path, "mqtt://127.0.0.1:1", "--force", "--discard-buffer")
    assert discarded.returncode == 0, discarded.stderr
    assert "discarded buffer" in discarded.stdout and "3 record(s) destroyed" in discarded.stdout
    assert not buffer.exists() and not Path(f"{buffer}-wal").exists()


def test_discard_buffer_needs_force(tmp_path: Path) -> None:
    result = _provision(tmp_path, "mqtt://127.0.0.1:1", "--discard-buffer")
    assert result.returncode == 2 and "only goes with --force" in result.stderr
