"""``heatgate doctor``: check an installation end to end and say what to fix.

Each check returns a :class:`Check`: ok or not, what was seen, and when not ok what to do.
Nothing here changes the installation, and readings taken by the source probes are
installer-local: they are shown, never stored or published.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import shutil
import sqlite3
import ssl
import stat
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from heatgate.agent.config import Config, LoadedConfig, ModbusRtuSource, P1Source, SourceConfig, ZwaveSource
from heatgate.agent.health import unreadable_problems

__all__ = ["Check", "run_checks"]

PLAUSIBLE_AFTER = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PLAUSIBLE_BEFORE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_key_files(config: Config) -> list[Check]:
    checks = []
    master = config.master_key_path
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / config.keys.master_key_credential).is_file():
        checks.append(Check("master key", True, f"from systemd credential {config.keys.master_key_credential}"))
    elif not master.exists():
        checks.append(Check("master key", False, f"{master} does not exist", "run heatgate provision"))
    elif _mode(master) & 0o077:
        checks.append(
            Check(
                "master key",
                False,
                f"{master} is mode {_mode(master):04o}: group or others can read it",
                f"chmod 600 {master}",
            )
        )
    elif master.stat().st_uid != os.geteuid():
        checks.append(
            Check(
                "master key",
                False,
                f"{master} is not owned by the user running doctor",
                f"run doctor as the service user, or chown it to that user: chown heatgate {master}",
            )
        )
    else:
        checks.append(Check("master key", True, f"{master} (mode {_mode(master):04o})"))
    keys_dir = master.parent
    if keys_dir.is_dir() and _mode(keys_dir) & 0o077:
        checks.append(
            Check("key directory", False, f"{keys_dir} is mode {_mode(keys_dir):04o}", f"chmod 700 {keys_dir}")
        )
    for label, value in (
        ("command key", config.keys.command_public_key_file),
        ("approval key", config.keys.approval_public_key_file),
    ):
        if value is None:
            checks.append(Check(label, True, "not pinned: remote commands are disabled"))
        elif not Path(value).is_file():
            checks.append(
                Check(label, False, f"{value} not found", "heatgate provision --command-key/--approval-key FILE")
            )
        else:
            checks.append(Check(label, True, f"pinned at {value}"))
    return checks


def check_state_dir(config: Config) -> Check:
    """The state directory: 0700 and owned by the user running doctor (the service user)."""
    state = config.state_dir
    if not state.is_dir():
        return Check("state directory", False, f"{state} does not exist", "run heatgate provision --owner heatgate")
    info = state.stat()
    if info.st_uid != os.geteuid():
        return Check(
            "state directory",
            False,
            f"{state} is owned by uid {info.st_uid}, not by the user running doctor (uid {os.geteuid()})",
            f"run doctor as the service user (sudo -u heatgate heatgate doctor …), or: chown -R heatgate: {state}",
        )
    if stat.S_IMODE(info.st_mode) & 0o077:
        return Check(
            "state directory", False, f"{state} is mode {stat.S_IMODE(info.st_mode):04o}", f"chmod 700 {state}"
        )
    return Check("state directory", True, f"{state} (mode 0700)")


def check_master_key_opens_buffer(config: Config) -> Check:
    """The master key the agent will load must be the one the buffer was created with."""
    from heatgate.agent.keycheck import probe_buffer
    from heatgate.buffer.errors import BufferFault
    from heatgate.buffer.keys import load_master_key

    name = "master key opens the buffer"
    path = config.buffer_path
    if not path.exists():
        return Check(name, True, f"{path} not created yet (the agent creates it with this key)")
    try:
        key = load_master_key(config.master_key_path, config.keys.master_key_credential)
    except BufferFault as exc:
        return Check(name, False, str(exc), "run doctor as the service user, with the key file provisioned")
    probe = probe_buffer(path, key)
    if probe.error:
        return Check(name, False, f"{path}: {probe.error}", "restart the agent: it quarantines a corrupt buffer")
    if not probe.has_key_check:
        return Check(name, True, f"{path} has no key-check value yet (the agent sets it at start)")
    if not probe.matches:
        return Check(
            name,
            False,
            f"{path} was created with another master key (replaced by `provision --force`?): "
            f"the agent will refuse to start, and its {probe.records} record(s) are unreadable",
            f"put the previous key back at {config.master_key_path}, or delete the buffer: "
            "heatgate provision --force --discard-buffer (its records are lost)",
        )
    return Check(name, True, f"{path}: key-check value matches ({probe.records} record(s) waiting)")


def check_clock(config: Config, now: dt.datetime | None = None) -> Check:
    now = now or dt.datetime.now(dt.UTC)
    if not PLAUSIBLE_AFTER <= now <= PLAUSIBLE_BEFORE:
        return Check(
            "clock",
            False,
            f"system time {now:%Y-%m-%d %H:%M} UTC is implausible",
            "enable NTP (timedatectl set-ntp true) and check the network",
        )
    cert_file = config.mqtt.cert_file
    if cert_file and Path(cert_file).is_file():
        from cryptography import x509

        cert = x509.load_pem_x509_certificate(Path(cert_file).read_bytes())
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            return Check(
                "clock",
                False,
                f"{now:%Y-%m-%d %H:%M} UTC is outside the certificate's validity "
                f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})",
                "fix the clock (NTP), or renew the certificate",
            )
    return Check("clock", True, f"{now:%Y-%m-%d %H:%M:%S} UTC")


def check_certificate(config: Config) -> list[Check]:
    mqtt = config.mqtt
    if not mqtt.tls:
        return [Check("TLS", True, "plain MQTT to a loopback broker (no certificates needed)")]
    checks = []
    if mqtt.ca_file and not Path(mqtt.ca_file).is_file():
        checks.append(Check("broker CA", False, f"{mqtt.ca_file} not found", "heatgate provision --ca FILE"))
    if mqtt.cert_file:
        from cryptography import x509
        from cryptography.x509.oid import NameOID

        cert_path = Path(mqtt.cert_file)
        if not cert_path.is_file():
            csr = cert_path.with_suffix(".csr")
            checks.append(
                Check(
                    "device certificate",
                    False,
                    f"{cert_path} not found",
                    f"have the CA sign {csr} and place the result at {cert_path}",
                )
            )
        else:
            cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
            names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
            common_name = str(names[0].value) if names else ""
            if common_name != config.gateway.id:
                checks.append(
                    Check(
                        "device certificate",
                        False,
                        f"subject CN {common_name!r} is not the gateway id {config.gateway.id!r}",
                        "request a certificate for this gateway's id",
                    )
                )
            else:
                days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
                checks.append(
                    Check(
                        "device certificate",
                        days > 0,
                        f"CN={common_name}, valid for {days} more day(s)",
                        "" if days > 0 else "renew the certificate",
                    )
                )
    return checks


def check_disk(config: Config) -> Check:
    directory = config.buffer_path.parent
    probe = directory if directory.exists() else config.state_dir
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    used = sum(p.stat().st_size for p in (config.buffer_path, Path(f"{config.buffer_path}-wal")) if p.exists())
    needed = max(0, config.buffer.cap_bytes - used)
    ok = usage.free > needed + 64 * 2**20
    return Check(
        "disk space",
        ok,
        f"{usage.free / 2**30:.1f} GiB free on {probe}; the buffer may grow by {needed / 2**20:.0f} MiB more",
        "" if ok else "free space or lower buffer.cap_bytes",
    )


def check_buffer(config: Config) -> Check:
    path = config.buffer_path
    if not path.exists():
        return Check("buffer", True, f"{path} not created yet (the agent creates it at start)")
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            result = conn.execute("PRAGMA quick_check").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        return Check("buffer", False, f"{path}: {exc}", "the agent quarantines a corrupt file at start: restart it")
    size = path.stat().st_size
    ok = result == "ok"
    return Check(
        "buffer",
        ok,
        f"{path}: quick_check {result}, {size / 2**20:.1f} MiB of {config.buffer.cap_bytes / 2**20:.0f} MiB",
        "" if ok else "restart the agent to quarantine it",
    )


def _serial_port(source: SourceConfig) -> str | None:
    if isinstance(source, ModbusRtuSource | P1Source | ZwaveSource):
        return source.port
    return None


def check_serial_ports(config: Config) -> list[Check]:
    checks = []
    for source in config.sources:
        port = _serial_port(source)
        if port is None:
            continue
        name = f"serial port of {source.name}"
        if not Path(port).exists():
            checks.append(
                Check(
                    name,
                    False,
                    f"{port} does not exist",
                    "plug the adapter in; check `ls /dev/serial/by-id/` and use that path",
                )
            )
            continue
        try:
            fd = os.open(port, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            os.close(fd)
        except PermissionError:
            checks.append(Check(name, False, f"{port}: permission denied", "add the service user to the dialout group"))
        except OSError as exc:
            checks.append(Check(name, False, f"{port}: {exc.strerror}", "check the adapter and its cable"))
        else:
            checks.append(Check(name, True, f"{port} opens"))
    return checks


async def _probe_source(source_config: SourceConfig, timeout_s: float) -> Check:
    from heatgate.agent.assembly import build_source
    from heatgate.drivers.reading import Quality, Reading

    name = f"source {source_config.name}"
    got_ok = asyncio.Event()
    seen: dict[str, int] = {}

    async def sink(readings: Sequence[Reading]) -> None:
        for reading in readings:
            seen[reading.quality.value] = seen.get(reading.quality.value, 0) + 1
            if reading.quality == Quality.OK:
                got_ok.set()

    try:
        source = build_source(source_config).source
    except (ValueError, OSError) as exc:
        return Check(name, False, str(exc), "check the source's config")
    task = asyncio.create_task(source.run(sink), name=f"probe:{source_config.name}")
    waiter = asyncio.create_task(got_ok.wait())
    await asyncio.wait({task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
    results = await asyncio.gather(task, waiter, return_exceptions=True)
    if got_ok.is_set():
        counts = ", ".join(f"{v} {k}" for k, v in sorted(seen.items()))
        unreadable = unreadable_problems(source_config.name, source.health())
        if unreadable:
            return Check(
                name,
                False,
                f"answers ({counts}), but " + "; ".join(unreadable),
                "declare the refused registers as `unreadable` in the profile or correct the point's address "
                "(`heatgate read` shows them)",
            )
        return Check(name, True, f"answers ({counts} within the probe)")
    error = results[0]
    detail = (
        f"{type(error).__name__}: {error}"
        if isinstance(error, BaseException) and not isinstance(error, asyncio.CancelledError)
        else f"no good reading within {timeout_s:g} s"
    )
    if seen:
        detail += f" (readings: {seen})"
    return Check(name, False, detail, "check wiring, address/unit id and that the device is powered")


async def probe_sources(config: Config, timeout_s: float) -> list[Check]:
    return list(await asyncio.gather(*(_probe_source(s, timeout_s) for s in config.sources)))


def check_broker(config: Config, timeout_s: float = 10.0) -> Check:
    """Connect with the agent's own TLS settings and certificate; report what the broker says."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    m = config.mqtt
    protocol = mqtt.MQTTv5 if m.protocol == "5" else mqtt.MQTTv311
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"{m.client_id or config.gateway.id}-doctor", protocol=protocol
    )
    if m.tls:
        context = ssl.create_default_context(cafile=m.ca_file)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if m.cert_file and m.key_file:
            try:
                context.load_cert_chain(m.cert_file, m.key_file)
            except (OSError, ssl.SSLError) as exc:
                return Check("broker", False, f"cannot load the device certificate: {exc}", "check keys/device.crt")
        client.tls_set_context(context)
    if m.username:
        password = Path(m.password_file).read_text().strip() if m.password_file else None
        client.username_pw_set(m.username, password)
    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(_c: object, _u: object, _f: object, reason: object, _p: object) -> None:
        outcome.append("ok" if not getattr(reason, "is_failure", False) else f"refused: {reason}")
        answered.set()

    client.on_connect = on_connect
    started = time.monotonic()
    try:
        client.connect(m.host, m.port, keepalive=10)
    except ssl.SSLCertVerificationError as exc:
        return Check(
            "broker",
            False,
            f"{m.host}:{m.port}: certificate not trusted ({exc.verify_message})",
            "check mqtt.ca_file and the broker's host name",
        )
    except (ssl.SSLError, OSError) as exc:
        return Check("broker", False, f"{m.host}:{m.port}: {exc}", "check the URL, the network and the firewall")
    client.loop_start()
    try:
        answered.wait(timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
    if not outcome:
        return Check(
            "broker",
            False,
            f"{m.host}:{m.port}: no answer to CONNECT within {timeout_s:g} s",
            "the broker may refuse the client certificate: check its CA and CN",
        )
    if outcome[0] != "ok":
        return Check(
            "broker", False, f"{m.host}:{m.port}: {outcome[0]}", "check the certificate/credentials and the ACL"
        )
    tls = "mutual TLS" if m.cert_file else ("TLS" if m.tls else "plain (loopback)")
    return Check(
        "broker",
        True,
        f"{m.host}:{m.port} accepted the connection over {tls} in {1000 * (time.monotonic() - started):.0f} ms",
    )


def check_policy(config: Config) -> list[Check]:
    """The policy loads; each device type of the sources and the rule it falls under (a type the
    policy does not list gets the most restrictive treatment: shown, so that it is a decision)."""
    from heatgate.agent.privacy.device_types import device_type_report
    from heatgate.agent.privacy.policy import UNLISTED, load_policy
    from heatgate.typedload import ConfigError

    try:
        policy = load_policy(config.policy_path)
    except ConfigError as exc:
        return [Check("privacy policy", False, exc.render().splitlines()[1], f"fix {config.policy_path}")]
    checks = [Check("privacy policy", True, f"{config.policy_path}: {len(policy.streams)} streams")]
    for entry in device_type_report(policy, config.sources):
        rules = "; ".join(f"{stream}: {rule}" for stream, rule in entry.rules.items())
        listed = "" if entry.listed else f"{UNLISTED} (not in [device_types]: the most restrictive rules); "
        detail = f"{listed}{', '.join(entry.producers)} -> {rules}"
        checks.append(Check(f"device type {entry.device_type}", True, detail))
    return checks


def run_checks(loaded: LoadedConfig, *, probe_timeout_s: float = 15.0) -> list[Check]:
    config = loaded.config
    checks = [Check("config", True, f"{loaded.path} is valid ({len(config.sources)} sources)")]
    checks.extend(check_policy(config))
    checks.append(check_state_dir(config))
    checks.extend(check_key_files(config))
    checks.append(check_master_key_opens_buffer(config))
    checks.append(check_clock(config))
    checks.extend(check_certificate(config))
    checks.extend(check_serial_ports(config))
    checks.extend(asyncio.run(probe_sources(config, probe_timeout_s)))
    checks.append(check_broker(config))
    checks.append(check_disk(config))
    checks.append(check_buffer(config))
    return checks
