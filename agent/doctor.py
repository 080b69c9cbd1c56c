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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from heatgate.agent.config import (
    Config,
    LoadedConfig,
    ModbusRtuOverTcpSource,
    ModbusRtuSource,
    ModbusTcpSource,
    P1Source,
    SourceConfig,
    ZwaveSource,
)
from heatgate.agent.health import unreadable_problems
from heatgate.drivers.reading import Reading

if TYPE_CHECKING:
    from cryptography import x509


__all__ = ["Check", "run_checks"]

PLAUSIBLE_AFTER = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
PLAUSIBLE_BEFORE = dt.datetime(2100, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""
    readings: tuple[Reading, ...] = ()
    """A source probe's decoded values (``doctor --values`` shows them; never stored)."""


SERVICE_USER_FIX = "run doctor as the service user: sudo -u heatgate heatgate doctor --config FILE"


def guarded(name: str, check: Callable[[], Check | list[Check]]) -> list[Check]:
    """Run one check; an OS or value error it did not foresee becomes a failed check with what
    was seen, never a traceback (the remaining checks still run)."""
    try:
        result = check()
    except PermissionError as exc:
        return [Check(name, False, f"{exc.filename or exc}: permission denied", SERVICE_USER_FIX)]
    except (OSError, ValueError) as exc:
        detail = f"{type(exc).__name__}: {exc}"
        return [Check(name, False, detail, "correct the file or setting named here, then run doctor again")]
    return result if isinstance(result, list) else [result]


def load_certificate(path: Path, label: str) -> x509.Certificate | str:
    """A PEM certificate, or what is wrong with the file, as a sentence (``label`` names it)."""
    from cryptography import x509

    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return f"{label} {path} not found"
    except PermissionError:
        return f"{label} {path}: permission denied"
    except IsADirectoryError:
        return f"{label} {path} is a directory"
    try:
        return x509.load_pem_x509_certificate(data)
    except ValueError:
        return f"{label} {path} is not a PEM certificate"


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def check_key_files(config: Config) -> list[Check]:
    checks = []
    master = config.master_key_path
    credentials = os.environ.get("CREDENTIALS_DIRECTORY")
    if credentials and (Path(credentials) / config.keys.master_key_credential).is_file():
        checks.append(Check("master key", True, f"from systemd credential {config.keys.master_key_credential}"))
    elif not master.exists():
        checks.append(
            Check(
                "master key",
                False,
                f"{master} does not exist",
                f"create it: heatgate provision --owner heatgate --state-dir {config.state_dir} … "
                "(README, For installers, step 2)",
            )
        )
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
            option = "--command-key" if label == "command key" else "--approval-key"
            checks.append(
                Check(label, False, f"{value} not found", f"pin the backend's key: heatgate provision {option} FILE")
            )
        else:
            checks.append(Check(label, True, f"pinned at {value}"))
    return checks


def check_state_dir(config: Config) -> Check:
    """The state directory: 0700 and owned by the user running doctor (the service user)."""
    state = config.state_dir
    if not state.is_dir():
        return Check(
            "state directory",
            False,
            f"{state} does not exist",
            f"create it: heatgate provision --owner heatgate --state-dir {state} … (README, For installers, step 2)",
        )
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
        return Check(name, False, f"not checked: {exc}", "fix the master key (its check above), then run doctor again")
    probe = probe_buffer(path, key)
    if probe.error:
        return Check(name, True, f"{path} cannot be read ({probe.error}): see the buffer check")
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
    from cryptography import x509

    now = now or dt.datetime.now(dt.UTC)
    if not PLAUSIBLE_AFTER <= now <= PLAUSIBLE_BEFORE:
        return Check(
            "clock",
            False,
            f"system time {now:%Y-%m-%d %H:%M} UTC is implausible",
            "enable NTP (timedatectl set-ntp true) and check the network",
        )
    cert_file = config.mqtt.cert_file
    cert = load_certificate(Path(cert_file), "device certificate") if cert_file else None
    # A missing or bad certificate is the certificate check's to report.
    if (
        cert_file
        and isinstance(cert, x509.Certificate)
        and not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc
    ):
        return Check(
            "clock",
            False,
            f"{now:%Y-%m-%d %H:%M} UTC is outside the certificate's validity "
            f"({cert.not_valid_before_utc:%Y-%m-%d} .. {cert.not_valid_after_utc:%Y-%m-%d})",
            "if the date is wrong, enable NTP (timedatectl set-ntp true); if it is right, have the CA "
            f"sign {Path(cert_file).with_suffix('.csr')} again and replace {cert_file}",
        )
    return Check("clock", True, f"{now:%Y-%m-%d %H:%M:%S} UTC")


def check_certificate(config: Config) -> list[Check]:
    """The broker's CA, the device certificate (its subject the gateway id, in its validity) and
    its key: each file present, readable and what it claims to be."""
    mqtt = config.mqtt
    if not mqtt.tls:
        return [Check("TLS", True, "plain MQTT to a loopback broker (no certificates needed)")]
    checks = []
    if mqtt.ca_file:
        ca = load_certificate(Path(mqtt.ca_file), "CA file")
        if isinstance(ca, str):
            checks.append(
                Check(
                    "broker CA",
                    False,
                    ca,
                    f"copy the CA certificate (PEM) that signed the broker's certificate to {mqtt.ca_file}",
                )
            )
        else:
            checks.append(Check("broker CA", True, f"{mqtt.ca_file}: {ca.subject.rfc4514_string()}"))
    else:
        checks.append(Check("broker CA", True, "the system's trusted CAs (mqtt.ca_file not set)"))
    if mqtt.cert_file and mqtt.key_file:
        checks.append(_device_certificate(config, Path(mqtt.cert_file), Path(mqtt.key_file)))
    return checks


def _device_certificate(config: Config, cert_path: Path, key_path: Path) -> Check:
    from cryptography.x509.oid import NameOID

    name = "device certificate"
    csr = cert_path.with_suffix(".csr")
    sign = f"have the broker's CA sign {csr} and put the certificate at {cert_path}"
    cert = load_certificate(cert_path, name)
    if isinstance(cert, str):
        return Check(name, False, cert.removeprefix(f"{name} "), SERVICE_USER_FIX if "permission" in cert else sign)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common_name = str(names[0].value) if names else ""
    if common_name != config.gateway.id:
        return Check(
            name,
            False,
            f"subject CN {common_name!r} is not the gateway id {config.gateway.id!r}",
            f"{sign} (its subject is CN={config.gateway.id})",
        )
    try:
        ssl.create_default_context().load_cert_chain(cert_path, key_path)
    except FileNotFoundError:
        return Check(name, False, f"key {key_path} not found", f"put the certificate's key at {key_path}, or {sign}")
    except PermissionError:
        return Check(name, False, f"key {key_path}: permission denied", SERVICE_USER_FIX)
    except ssl.SSLError as exc:
        return Check(name, False, f"{key_path} is not the key of {cert_path} ({exc.reason})", sign)
    days = (cert.not_valid_after_utc - dt.datetime.now(dt.UTC)).days
    if days <= 0:
        return Check(name, False, f"CN={common_name}, expired", f"{sign} again")
    return Check(name, True, f"CN={common_name}, valid for {days} more day(s)")


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
        ""
        if ok
        else f"free {(needed + 64 * 2**20 - usage.free) / 2**20:.0f} MiB on {probe}, or lower buffer.cap_bytes",
    )


def check_buffer(config: Config) -> Check:
    """The buffer's integrity, judged as the agent judges it at start
    (:func:`heatgate.buffer.sqlite_open.open_database`): ``quick_check`` not ok, or SQLite calling
    the file corrupt, means the agent moves it aside and starts an empty one (its records are
    lost); any other SQLite error means the agent does not start; records without a key-check
    value mean it refuses to guess a key. Read-only: nothing is moved here."""
    from heatgate.buffer.sqlite_open import _is_corruption  # the agent's own rule, not a copy

    path = config.buffer_path
    if not path.exists():
        return Check("buffer", True, f"{path} not created yet (the agent creates it at start)")
    moved = (
        f"at start the agent moves it aside to {path.name}.corrupt-<time> and starts an empty buffer; "
        "the records in it are not published"
    )
    keep = f"to keep its records for analysis, copy {path}* elsewhere first; then restart the agent"
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5) as conn:
            result = [str(row[0]) for row in conn.execute("PRAGMA quick_check").fetchall()]
            tables = {name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            meta = {name for (name,) in conn.execute("SELECT name FROM meta")} if "meta" in tables else set()
    except sqlite3.DatabaseError as exc:
        if _is_corruption(exc):
            return Check("buffer", False, f"{path}: {exc}: {moved}", f"{keep}: systemctl restart heatgate")
        return Check(
            "buffer",
            False,
            f"{path}: {exc}: the agent cannot open it and will not start",
            f"give it to the service user (chown heatgate: {path}*; chmod 600 {path}*) and free disk space "
            f"on {path.parent}",
        )
    if result != ["ok"]:
        return Check(
            "buffer",
            False,
            f"{path}: quick_check: {'; '.join(result[:3])}: {moved}",
            f"{keep}: systemctl restart heatgate",
        )
    if "records" in tables and not {"salt", "key_check"} <= meta:
        return Check(
            "buffer",
            False,
            f"{path} has records but no key-check value: the agent refuses to start on it",
            f"move it aside (mv {path} {path}.old) so that the agent starts an empty buffer",
        )
    size = path.stat().st_size
    return Check(
        "buffer",
        True,
        f"{path}: quick_check ok, {size / 2**20:.1f} MiB of {config.buffer.cap_bytes / 2**20:.0f} MiB",
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
            checks.append(
                Check(
                    name,
                    False,
                    f"{port}: permission denied",
                    "add the service user to the dialout group (usermod -aG dialout heatgate), and run doctor "
                    "as that user",
                )
            )
        except OSError as exc:
            checks.append(
                Check(
                    name,
                    False,
                    f"{port}: {exc.strerror}",
                    f"unplug and replug the adapter, then look for it: ls -l /dev/serial/by-id/ (now {port})",
                )
            )
        else:
            checks.append(Check(name, True, f"{port} opens"))
    return checks


def _probe_fix(source: SourceConfig) -> str:
    """What an installer does about a source that gives no good reading, per kind of source."""
    if isinstance(source, ModbusTcpSource | ModbusRtuOverTcpSource):
        return (
            f"check that the device is powered and reachable at {source.host}:{source.port}, and its unit ids: "
            f"heatgate scan modbus --host {source.host} --port {source.port}"
        )
    if isinstance(source, ModbusRtuSource):
        return (
            "check the RS-485 wiring (A/B, termination), the device's power, baud rate and unit ids: "
            f"heatgate scan modbus --serial {source.port} --baud {source.baudrate}"
        )
    if isinstance(source, P1Source):
        return f"check the P1 cable and that the meter's P1 port is enabled; dsmr_version is {source.dsmr_version}"
    if isinstance(source, ZwaveSource):
        return f"check that {source.port} is the Z-Wave stick and the nodes are awake: heatgate zwave nodes"
    return "check that heatgate-zwave.service runs (systemctl status heatgate-zwave) and: heatgate zwave nodes"


def _expected_devices(source: SourceConfig) -> set[str]:
    """The devices a source must hear from before the probe is done (Modbus: every device)."""
    if isinstance(source, ModbusTcpSource | ModbusRtuSource | ModbusRtuOverTcpSource):
        return {device.name for device in source.devices}
    return set()


async def _probe_source(source_config: SourceConfig, timeout_s: float) -> Check:
    from heatgate.agent.assembly import build_source
    from heatgate.drivers.reading import Quality
    from heatgate.typedload import ConfigError

    name = f"source {source_config.name}"
    expected = _expected_devices(source_config)
    done = asyncio.Event()
    seen: dict[str, int] = {}
    answered: set[str] = set()
    latest: dict[tuple[str, str], Reading] = {}

    async def sink(readings: Sequence[Reading]) -> None:
        for reading in readings:
            seen[reading.quality.value] = seen.get(reading.quality.value, 0) + 1
            latest[(reading.device, reading.point)] = reading
            if reading.quality == Quality.OK:
                answered.add(reading.device)
        if answered and expected <= answered:
            done.set()

    try:
        source = build_source(source_config).source
    except ConfigError as exc:
        return Check(name, False, exc.render().replace("\n", "; "), "correct the profile: heatgate profile check FILE")
    except (ValueError, OSError) as exc:
        return Check(name, False, str(exc), _probe_fix(source_config))
    task = asyncio.create_task(source.run(sink), name=f"probe:{source_config.name}")
    waiter = asyncio.create_task(done.wait())
    await asyncio.wait({task, waiter}, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
    for pending in (task, waiter):
        pending.cancel()
    results = await asyncio.gather(task, waiter, return_exceptions=True)
    readings = tuple(latest[key] for key in sorted(latest))
    counts = ", ".join(f"{v} {k}" for k, v in sorted(seen.items()))
    if answered:
        silent = sorted(expected - answered)
        if silent:
            return Check(
                name,
                False,
                f"{', '.join(silent)} gave no good reading within {timeout_s:g} s (readings: {counts})",
                _probe_fix(source_config),
                readings,
            )
        unreadable = unreadable_problems(source_config.name, source.health())
        if unreadable:
            return Check(
                name,
                False,
                f"answers ({counts}), but " + "; ".join(unreadable),
                "declare the refused registers as `unreadable` in the profile or correct the point's address "
                "(`heatgate read` shows them)",
                readings,
            )
        return Check(name, True, f"answers ({counts} within the probe)", readings=readings)
    error = results[0]
    detail = (
        f"{type(error).__name__}: {error}"
        if isinstance(error, BaseException) and not isinstance(error, asyncio.CancelledError)
        else f"no good reading within {timeout_s:g} s"
    )
    if seen:
        detail += f" (readings: {counts})"
    return Check(name, False, detail, _probe_fix(source_config), readings)


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
    where = f"{m.host}:{m.port}"
    if m.tls:
        try:
            context = ssl.create_default_context(cafile=m.ca_file)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            if m.cert_file and m.key_file:
                context.load_cert_chain(m.cert_file, m.key_file)
        except (OSError, ssl.SSLError) as exc:
            return Check(
                "broker",
                False,
                f"{where} not tried: TLS files unusable ({exc})",
                "fix the broker CA and device certificate checks above, then run doctor again",
            )
        client.tls_set_context(context)
    if m.username:
        try:
            password = Path(m.password_file).read_text().strip() if m.password_file else None
        except OSError as exc:
            return Check(
                "broker",
                False,
                f"{where} not tried: password file {m.password_file}: {exc.strerror}",
                f"write the broker password for {m.username!r} to {m.password_file} "
                "(root:heatgate, mode 0640), or set mqtt.password_file to where it is",
            )
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
            f"{where}: the broker's certificate is not trusted ({exc.verify_message})",
            f"set mqtt.ca_file to the CA that signed the broker's certificate, and mqtt.url to a host name "
            f"that certificate names (now {m.url})",
        )
    except (ssl.SSLError, OSError) as exc:
        return Check(
            "broker",
            False,
            f"{where}: {exc.strerror if isinstance(exc, OSError) and exc.strerror else exc}",
            f"check mqtt.url ({m.url}) and that this gateway reaches it: nc -vz {m.host} {m.port}",
        )
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
            f"{where}: no answer to CONNECT within {timeout_s:g} s",
            "the broker may have dropped the TLS handshake: check that its CA signed this gateway's "
            "certificate, and the broker's log for this client",
        )
    if outcome[0] != "ok":
        return Check(
            "broker",
            False,
            f"{where}: {outcome[0]}",
            f"have the broker accept client {m.client_id or config.gateway.id!r} (its ACL, or the "
            "username and password file)",
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
    """Every check of the installation, in order; each one guarded (see :func:`guarded`)."""
    config = loaded.config
    checks = [Check("config", True, f"{loaded.path} is valid ({len(config.sources)} sources)")]
    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("privacy policy", lambda: check_policy(config)),
        ("state directory", lambda: check_state_dir(config)),
        ("master key", lambda: check_key_files(config)),
        ("master key opens the buffer", lambda: check_master_key_opens_buffer(config)),
        ("clock", lambda: check_clock(config)),
        ("TLS", lambda: check_certificate(config)),
        ("serial ports", lambda: check_serial_ports(config)),
        ("sources", lambda: asyncio.run(probe_sources(config, probe_timeout_s))),
        ("broker", lambda: check_broker(config)),
        ("disk space", lambda: check_disk(config)),
        ("buffer", lambda: check_buffer(config)),
    ]
    for name, step in steps:
        checks.extend(guarded(name, step))
    here = f"--config {loaded.path}"
    return [replace(c, fix=c.fix.replace("--config FILE", here)) if c.fix else c for c in checks]
