"""Provisioning a gateway: state directory, keys, certificate request, pinned keys, config.

Idempotent: run it again and it keeps what exists (keys are never overwritten without
``force``), creates what is missing, and says which is which. ``force`` never replaces the
master key of a state directory whose buffer it would make unreadable, unless
``discard_buffer`` says to delete that buffer.

Ownership, with ``owner`` (the service user, as root): the state directory and keys belong to
the user (0700/0600); the config is ``root:<owner's group>`` 0640 in a ``root:<group>`` 0750
directory, so that the service and ``sudo -u heatgate heatgate doctor`` can read it and only
root can change it. Where ``systemd-creds`` exists, the master key is also sealed as the
``heatgate-master-key`` credential and a unit drop-in makes systemd hand it to the agent.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import NameOID

from heatgate.errors import HeatgateError

__all__ = ["Answers", "ProvisionError", "ProvisionReport", "provision"]


class ProvisionError(HeatgateError):
    """Provisioning cannot go on; the message says what to fix."""


class BufferAtStake(ProvisionError):
    """``force`` would replace the master key of a buffer that still holds records."""

    def __init__(self, buffer_path: Path, records: int) -> None:
        super().__init__(
            f"{buffer_path} holds {records} record(s) encrypted under the current master key; a new key "
            "would make them unreadable. Run without --force to keep the key (it replaces nothing else "
            f"that works), or add --discard-buffer to delete the buffer and its {records} record(s)"
        )
        self.buffer_path = buffer_path
        self.records = records


CREDENTIAL_NAME = "heatgate-master-key"
DEFAULT_CREDSTORE = Path("/etc/credstore.encrypted")
DEFAULT_UNIT_DROPIN_DIR = Path("/etc/systemd/system/heatgate.service.d")


@dataclass(frozen=True)
class Answers:
    gateway_id: str
    region: str
    state_dir: Path
    config_path: Path
    broker_url: str
    ca_file: Path | None = None
    command_public_key: Path | None = None
    approval_public_key: Path | None = None
    owner: str | None = None
    sources_toml: str = ""
    """Extra ``[[sources]]`` tables appended to the written config, as TOML text."""
    seal_credential: bool = True
    """Seal the master key with ``systemd-creds`` for the unit (only as root with ``owner``)."""
    credstore_dir: Path = DEFAULT_CREDSTORE
    unit_dropin_dir: Path = DEFAULT_UNIT_DROPIN_DIR


@dataclass
class ProvisionReport:
    created: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    next_steps: list[str] = field(default_factory=list)

    def note(self, created: bool, what: str) -> None:
        (self.created if created else self.kept).append(what)


def _owner_ids(owner: str | None) -> tuple[int, int] | None:
    if owner is None:
        return None
    try:
        entry = pwd.getpwnam(owner)
    except KeyError:
        raise ProvisionError(f"user {owner!r} does not exist: create it first (useradd --system heatgate)") from None
    return entry.pw_uid, entry.pw_gid


def _chown(path: Path, ids: tuple[int, int] | None) -> None:
    if ids is not None:
        os.chown(path, *ids)


def _write_private(path: Path, data: bytes, ids: tuple[int, int] | None) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)
    _chown(path, ids)


def _load_ed25519_public(path: Path, what: str) -> bytes:
    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except FileNotFoundError:
        raise ProvisionError(f"{what}: {path} not found") from None
    except ValueError as exc:
        raise ProvisionError(f"{what}: {path} is not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise ProvisionError(f"{what}: {path} is not an Ed25519 public key")
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def provision(answers: Answers, *, force: bool = False, discard_buffer: bool = False) -> ProvisionReport:
    """Create or complete an installation from ``answers``; see the module docstring."""
    from heatgate.agent.keycheck import buffer_files, probe_buffer
    from heatgate.buffer.keys import create_master_key

    report = ProvisionReport()
    master = answers.state_dir / "keys" / "master.key"
    if force and master.exists():
        buffer_path = _buffer_path(answers)
        probe = probe_buffer(buffer_path)
        if probe.exists and probe.records and not discard_buffer:
            raise BufferAtStake(buffer_path, probe.records)
        if probe.exists:
            for path in buffer_files(buffer_path):
                path.unlink()
            report.created.append(f"discarded buffer {buffer_path} ({probe.records} record(s) destroyed)")

    ids = _owner_ids(answers.owner)
    state = answers.state_dir
    keys = state / "keys"
    for directory in (state, keys):
        existed = directory.is_dir()
        directory.mkdir(parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
        _chown(directory, ids)
        report.note(not existed, f"directory {directory} (0700)")

    wrote = create_master_key(master, force=force)
    _chown(master, ids)
    report.note(wrote, f"master key {master} (0600)")
    _seal_master_key(answers, master, report)

    from heatgate.drivers.zwavejs.keys import write_server_config

    # Kept even with --force: new Z-Wave keys orphan every securely included device.
    zwave_config, wrote = write_server_config(keys, owner_ids=ids)
    report.note(wrote, f"Z-Wave network keys {zwave_config} (0600, for heatgate-zwave.service)")

    device_key = keys / "device.key"
    if force or not device_key.exists():
        private = ec.generate_private_key(ec.SECP256R1())
        _write_private(
            device_key,
            private.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            ),
            ids,
        )
        report.note(True, f"device key {device_key} (0600)")
    else:
        loaded = serialization.load_pem_private_key(device_key.read_bytes(), password=None)
        if not isinstance(loaded, ec.EllipticCurvePrivateKey):
            raise ProvisionError(f"{device_key} is not an EC private key; use --force to replace it")
        private = loaded
        report.note(False, f"device key {device_key}")

    csr_path = keys / "device.csr"
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, answers.gateway_id)])
    current = _existing_csr(csr_path)
    csr_ok = current is not None and current.subject == subject and current.public_key() == private.public_key()
    if not csr_ok:
        # The subject is the gateway id and nothing else: no customer name, no address.
        csr = x509.CertificateSigningRequestBuilder().subject_name(subject).sign(private, hashes.SHA256())
        csr_path.write_bytes(csr.public_bytes(serialization.Encoding.PEM))
        os.chmod(csr_path, 0o644)
        _chown(csr_path, ids)
    report.note(not csr_ok, f"certificate signing request {csr_path} (CN={answers.gateway_id})")

    pins = [
        ("command verification key", answers.command_public_key, keys / "command.pub"),
        ("approval verification key", answers.approval_public_key, keys / "approval.pub"),
    ]
    for what, given, target in pins:
        if given is None:
            if not target.exists():
                report.next_steps.append(f"pin the backend's {what}: heatgate provision … --{_flag(what)} FILE")
            continue
        pem = _load_ed25519_public(given, what)
        if target.exists() and target.read_bytes() != pem and not force:
            raise ProvisionError(f"{target} already pins a different {what}; use --force to replace it")
        changed = not target.exists() or target.read_bytes() != pem
        if changed:
            target.write_bytes(pem)
            os.chmod(target, 0o644)
            _chown(target, ids)
        report.note(changed, f"pinned {what} {target}")

    if answers.ca_file is not None:
        ca_target = keys / "ca.pem"
        data = answers.ca_file.read_bytes()
        changed = not ca_target.exists() or ca_target.read_bytes() != data
        if changed:
            shutil.copyfile(answers.ca_file, ca_target)
            os.chmod(ca_target, 0o644)
            _chown(ca_target, ids)
        report.note(changed, f"broker CA {ca_target}")

    config_text = render_config(answers)
    config = answers.config_path
    if config.exists() and config.read_text() != config_text and not force:
        report.kept.append(f"config {config} (differs from the answers; --force rewrites it)")
    else:
        changed = not config.exists() or config.read_text() != config_text
        if not config.parent.exists():
            config.parent.mkdir(parents=True, mode=0o750)
            _chown_config(config.parent, ids)
        if changed:
            config.write_text(config_text)
        report.note(changed, f"config {config}")
    os.chmod(config, 0o640)
    _chown_config(config, ids)

    if not (keys / "device.crt").exists():
        report.next_steps.append(
            f"have the backend's CA sign {csr_path} and place the certificate at {keys / 'device.crt'}"
        )
    report.next_steps.append(f"heatgate doctor --config {config}")
    return report


def _chown_config(path: Path, ids: tuple[int, int] | None) -> None:
    """root:<owner's group> as root; the owner's group only (keeping the user) otherwise."""
    if ids is not None:
        os.chown(path, 0 if os.geteuid() == 0 else -1, ids[1])


def _buffer_path(answers: Answers) -> Path:
    """The buffer the current config names (``[buffer] path``), else the state dir's default."""
    import tomllib

    try:
        with answers.config_path.open("rb") as handle:
            named = tomllib.load(handle).get("buffer", {}).get("path")
    except (OSError, tomllib.TOMLDecodeError):
        named = None
    return Path(named) if isinstance(named, str) and named else answers.state_dir / "buffer.db"


def _seal_master_key(answers: Answers, master: Path, report: ProvisionReport) -> None:
    """Seal the key for the unit with ``systemd-creds`` where that is possible; say so either way."""
    creds = shutil.which("systemd-creds")
    if not answers.seal_credential:
        return
    if answers.owner is None or os.geteuid() != 0 or creds is None:
        why = "systemd-creds is not installed" if creds is None else "not root, or no --owner"
        report.kept.append(f"master key stays in {master} only ({why}): the agent reads the 0600 file")
        return
    sealed = answers.credstore_dir / CREDENTIAL_NAME
    key = master.read_bytes()
    unchanged = False
    if sealed.exists():
        current = subprocess.run(
            [creds, f"--name={CREDENTIAL_NAME}", "decrypt", str(sealed), "-"], capture_output=True, check=False
        )
        unchanged = current.returncode == 0 and current.stdout == key
    if not unchanged:
        answers.credstore_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        result = subprocess.run(
            [creds, f"--name={CREDENTIAL_NAME}", "encrypt", str(master), str(sealed)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise ProvisionError(f"systemd-creds encrypt failed: {result.stderr.strip()} (or use --no-credential)")
        os.chmod(sealed, 0o400)
    report.note(not unchanged, f"sealed master key {sealed} (systemd credential {CREDENTIAL_NAME})")
    dropin = answers.unit_dropin_dir / "10-master-key.conf"
    text = (
        "# Written by `heatgate provision`: systemd decrypts the sealed master key for the agent.\n"
        f"[Service]\nLoadCredentialEncrypted={CREDENTIAL_NAME}:{sealed}\n"
    )
    changed = not dropin.exists() or dropin.read_text() != text
    if changed:
        answers.unit_dropin_dir.mkdir(parents=True, exist_ok=True)
        dropin.write_text(text)
        os.chmod(dropin, 0o644)
        report.next_steps.append("systemctl daemon-reload (the unit now loads the sealed master key)")
    report.note(changed, f"unit drop-in {dropin}")


def _existing_csr(path: Path) -> x509.CertificateSigningRequest | None:
    try:
        return x509.load_pem_x509_csr(path.read_bytes())
    except (FileNotFoundError, ValueError):
        return None


def _flag(what: str) -> str:
    return "command-key" if what.startswith("command") else "approval-key"


def render_config(answers: Answers) -> str:
    keys = answers.state_dir / "keys"
    tls = answers.broker_url.startswith("mqtts://")
    lines = [
        "# Written by `heatgate provision`. See the shipped heatgate.example.toml for every key.",
        "",
        "[gateway]",
        f'id = "{answers.gateway_id}"',
        f'region = "{answers.region}"',
        f'state_dir = "{answers.state_dir}"',
        "",
        "[mqtt]",
        f'url = "{answers.broker_url}"',
    ]
    if tls:
        if answers.ca_file is not None:
            lines.append(f'ca_file = "{keys / "ca.pem"}"')
        lines += [f'cert_file = "{keys / "device.crt"}"', f'key_file = "{keys / "device.key"}"']
    lines += [
        "",
        "[keys]",
        f'master_key_file = "{keys / "master.key"}"',
    ]
    if answers.command_public_key is not None or (keys / "command.pub").exists():
        lines.append(f'command_public_key_file = "{keys / "command.pub"}"')
    if answers.approval_public_key is not None or (keys / "approval.pub").exists():
        lines.append(f'approval_public_key_file = "{keys / "approval.pub"}"')
    text = "\n".join(lines) + "\n"
    if answers.sources_toml.strip():
        text += "\n" + answers.sources_toml.strip() + "\n"
    return text
