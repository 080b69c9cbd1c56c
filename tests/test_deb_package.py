"""The Debian package, built as `make deb` builds it and installed by dpkg as an installer would.

amd64 (this machine): installed into a throwaway root (tests/support/throwaway_root.py) with its
maintainer scripts, then README "For installers" is walked: provision as root, check-config and
doctor as the heatgate user against a broker of the test's own, an upgrade that keeps keys and
config, remove, purge. Not run: `systemctl enable --now` and `heatgate status` need a running
systemd, which a chroot does not have; the installed unit is checked with systemd-analyze instead.
arm64: built on this machine and checked: every ELF file is aarch64; and run under qemu-aarch64
(tests/support/foreign_root.py: Debian's arm64 python3.11 with the package unpacked over it):
`heatgate --version`, its compiled modules loaded, `check-config --offline` of the shipped example.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from heatgate import __version__
from heatgate.agent.devtools.localbroker import Broker
from tests.support.foreign_root import ForeignRoot, unavailable
from tests.support.throwaway_root import ThrowawayRoot, available

ROOT = Path(__file__).resolve().parents[1]
VERSION = f"{__version__}-1"
README_STEPS = ("provision", "check-config", "doctor", "systemctl enable --now heatgate", "status")

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def _elfcheck():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("heatgate_elfcheck", ROOT / "packaging" / "elfcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def debs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both packages, built by the script `make deb` runs (xz level 1 instead of 6: same contents)."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, str(ROOT / "packaging" / "build_deb.py"), "--out", str(out), "--xz-level", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return {arch: out / f"heatgate_{VERSION}_{arch}.deb" for arch in ("amd64", "arm64")}


def _field(deb: Path, name: str) -> str:
    return subprocess.run(["dpkg-deb", "-f", str(deb), name], capture_output=True, text=True, check=True).stdout.strip()


def _extract(deb: Path, into: Path) -> Path:
    subprocess.run(["dpkg-deb", "-x", str(deb), str(into)], check=True)
    return into


def test_arm64_package_holds_only_aarch64_code(debs: dict[str, Path], tmp_path: Path) -> None:
    deb = debs["arm64"]
    assert _field(deb, "Architecture") == "arm64"
    assert _field(deb, "Package") == "heatgate" and _field(deb, "Version") == VERSION
    depends = _field(deb, "Depends")
    assert "python3 (>= 3.11~)" in depends and "adduser" in depends
    tree = _extract(deb, tmp_path / "arm64")
    elfcheck = _elfcheck()
    found = dict(elfcheck.elf_files(tree))
    assert len(found) >= 7, found  # cffi and msgspec per Python, cryptography and PyNaCl once (abi3)
    assert set(found.values()) == {"arm64"}, found
    opt = tree / "opt" / "heatgate"
    assert (opt / "pyvenv.cfg").read_text().startswith("home = /usr/bin\n")
    assert Path.readlink(opt / "bin" / "python3") == Path("/usr/bin/python3")
    assert (opt / "bin" / "heatgate").read_text().startswith("#!/opt/heatgate/bin/python3\n")
    for python in ("3.11", "3.13"):  # bookworm, trixie
        site = opt / "lib" / f"python{python}" / "site-packages"
        tag = python.replace(".", "")
        assert list(site.glob(f"_cffi_backend.cpython-{tag}-aarch64-linux-gnu.so")), sorted(site.iterdir())
        assert (site / "nacl" / "_sodium.abi3.so").is_file(), "libsodium: the daemon's cryptography"
        assert (site / "heatgate" / "config" / "privacy.toml").is_file()
        assert list((site / "heatgate" / "config" / "profiles").glob("*.toml"))
    assert not list(opt.rglob("*.pyc")), "byte code is made by postinst, never shipped"


def test_arm64_package_runs_under_qemu(debs: dict[str, Path], tmp_path: Path) -> None:
    reason = unavailable()
    if reason:
        pytest.fail(f"arm64 under qemu: {reason} (make deb-deps installs qemu-user-static)")
    root = ForeignRoot(tmp_path / "arm64-root", debs["arm64"])
    python = "/opt/heatgate/bin/python3"
    version = root.run(python, "/opt/heatgate/bin/heatgate", "--version")
    assert version.returncode == 0 and version.stdout.strip() == f"heatgate {__version__}", version.stderr
    compiled = root.run(
        python,
        "-c",
        "import platform, msgspec, _cffi_backend\n"
        "from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305\n"
        "from heatgate.sodium import ChaCha20Poly1305 as Sodium\n"
        "key = ChaCha20Poly1305.generate_key()\n"
        "sealed = Sodium(key).encrypt(bytes(12), b'reading', b'ad')\n"
        "print(platform.machine(), len(key), sealed == ChaCha20Poly1305(key).encrypt(bytes(12), b'reading', b'ad'))",
    )
    assert compiled.returncode == 0 and compiled.stdout.split() == ["aarch64", "32", "True"], compiled.stderr
    example = "/opt/heatgate/lib/python3.11/site-packages/heatgate/config/heatgate.example.toml"
    check = root.run(python, "/opt/heatgate/bin/heatgate", "check-config", "--offline", "--config", example)
    assert check.returncode == 0 and "is valid" in check.stdout, check.stdout + check.stderr


def test_amd64_and_arm64_differ_only_in_compiled_modules(debs: dict[str, Path], tmp_path: Path) -> None:
    def listing(deb: Path) -> set[str]:
        names = subprocess.run(["dpkg-deb", "-c", str(deb)], capture_output=True, text=True, check=True).stdout
        return {re.sub(r"(x86_64|aarch64)", "ARCH", line.split()[5]) for line in names.splitlines()}

    assert listing(debs["amd64"]) == listing(debs["arm64"])
    assert set(dict(_elfcheck().elf_files(_extract(debs["amd64"], tmp_path / "amd64"))).values()) == {"amd64"}


def _sha256(root: ThrowawayRoot, path: str) -> str:
    result = root.run("sha256sum", path)
    assert result.returncode == 0, result.stderr
    return result.stdout.split()[0]


def _stat(root: ThrowawayRoot, path: str) -> str:
    return root.run("stat", "-c", "%U:%G %a", path).stdout.strip()


def test_install_provision_check_doctor_upgrade_purge(
    debs: dict[str, Path], tmp_path: Path, broker_factory: Callable[..., Broker]
) -> None:
    reason = available()
    if reason:
        pytest.fail(f"throwaway root: {reason}")
    root = ThrowawayRoot(tmp_path / "root")
    deb = debs["amd64"]
    (root.path("/tmp") / deb.name).write_bytes(deb.read_bytes())
    package = f"/tmp/{deb.name}"

    # README step 1: install the package (apt install ./heatgate_…deb resolves the same Depends,
    # all of which this machine has; dpkg runs the same maintainer scripts).
    installed = root.host(f"dpkg --root=$ROOT -i $ROOT{package}")
    assert installed.returncode == 0, installed.stdout + installed.stderr
    assert root.run("id", "-nG", "heatgate").stdout.split() == ["heatgate", "dialout"]
    assert root.run("getent", "passwd", "heatgate").stdout.strip().endswith(":/var/lib/heatgate:/usr/sbin/nologin")
    assert _stat(root, "/etc/heatgate") == "root:heatgate 750"
    assert root.run("sh", "-c", "command -v heatgate").stdout.strip() == "/usr/bin/heatgate"
    version = root.run("heatgate", "--version", user="heatgate")
    assert version.returncode == 0 and version.stdout.strip() == f"heatgate {__version__}", version.stderr
    compiled = root.run("sh", "-c", "ls /opt/heatgate/lib/python3.11/site-packages/heatgate/__pycache__")
    assert "cpython-311.pyc" in compiled.stdout, compiled.stderr

    # The installed unit verifies (ExecStart, user and directories as installed).
    verify = root.host("chroot $ROOT systemd-analyze verify --man=no /usr/lib/systemd/system/heatgate.service")
    assert not [line for line in verify.stderr.splitlines() if "heatgate.service" in line], verify.stderr

    # README step 2: provision as root for the service user, against a broker of the test's own.
    broker = broker_factory("plain")
    provision = root.run(
        "heatgate", "provision", "--gateway-id", "gw-deb-0001", "--region", "3511 AB",
        "--broker-url", broker.url, "--owner", "heatgate",
    )  # fmt: skip
    assert provision.returncode == 0, provision.stdout + provision.stderr
    assert _stat(root, "/etc/heatgate/heatgate.toml") == "root:heatgate 640"
    assert _stat(root, "/var/lib/heatgate") == "heatgate:heatgate 700"
    assert _stat(root, "/var/lib/heatgate/keys/master.key") == "heatgate:heatgate 600"
    # systemd-creds sealed the key for the unit, and the drop-in loads it.
    assert "sealed master key /etc/credstore.encrypted/heatgate-master-key" in provision.stdout, provision.stdout
    dropin = root.run("cat", "/etc/systemd/system/heatgate.service.d/10-master-key.conf").stdout
    assert "LoadCredentialEncrypted=heatgate-master-key:/etc/credstore.encrypted/heatgate-master-key" in dropin
    key_hex = root.run("cat", "/var/lib/heatgate/keys/master.key").stdout.strip()
    unsealed = root.run(
        "systemd-creds", "--name=heatgate-master-key", "decrypt", "/etc/credstore.encrypted/heatgate-master-key", "-"
    )
    assert unsealed.stdout.strip() == key_hex, unsealed.stderr

    # README step 3: check-config and doctor, as the service user.
    config = "/etc/heatgate/heatgate.toml"
    check = root.run("heatgate", "check-config", "--config", config, user="heatgate")
    assert check.returncode == 0, check.stdout + check.stderr
    doctor = root.run("heatgate", "doctor", "--config", config, user="heatgate")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "accepted the connection" in doctor.stdout

    # Upgrade (the same package again: prerm upgrade, postinst configure <old version>): keys and
    # config stay.
    key_before = _sha256(root, "/var/lib/heatgate/keys/master.key")
    config_before = _sha256(root, config)
    again = root.host(f"dpkg --root=$ROOT -i $ROOT{package}")
    assert again.returncode == 0, again.stderr
    assert _sha256(root, "/var/lib/heatgate/keys/master.key") == key_before
    assert _sha256(root, config) == config_before
    assert _stat(root, "/etc/heatgate") == "root:heatgate 750"

    # remove keeps config and state; purge deletes them, and the sealed key with its drop-in.
    removed = root.host("dpkg --root=$ROOT -r heatgate")
    assert removed.returncode == 0, removed.stderr
    assert root.run("test", "-f", "/var/lib/heatgate/keys/master.key").returncode == 0
    assert root.run("test", "-f", config).returncode == 0
    assert root.run("test", "-e", "/opt/heatgate/bin/heatgate").returncode == 1
    assert root.run("test", "-d", "/opt/heatgate").returncode == 1, "postinst's __pycache__ left behind"
    purged = root.host("dpkg --root=$ROOT -P heatgate")
    assert purged.returncode == 0, purged.stderr
    for gone in ("/var/lib/heatgate", "/etc/heatgate", "/etc/credstore.encrypted/heatgate-master-key"):
        assert root.run("test", "-e", gone).returncode == 1, gone


def test_readme_installer_section_is_the_package_path() -> None:
    text = (ROOT / "README.md").read_text()
    section = text.split("## For installers", 1)[1].split("\n## ", 1)[0]
    assert "apt install ./heatgate_" in section and "_arm64.deb" in section
    for step in README_STEPS:
        assert step in section, step
    assert "useradd" not in section and "cp systemd/" not in section, "the package does these now"
    # The commands the install test runs, as the README writes them.
    for command in (
        "--owner heatgate",
        "sudo -u heatgate heatgate check-config --config /etc/heatgate/heatgate.toml",
        "sudo -u heatgate heatgate doctor --config /etc/heatgate/heatgate.toml",
        "provision --force --discard-buffer",
    ):
        assert command in section, command
