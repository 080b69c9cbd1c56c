"""An arm64 Debian root on this x86 machine, to run the arm64 package's code under qemu-user.

The package uses the target's ``/usr/bin/python3`` (Raspberry Pi OS bookworm: 3.11), so the root
holds Debian bookworm's arm64 ``python3.11`` with its dependency closure, fetched by apt with a
private state directory (the host's apt and dpkg configuration are not touched), and the package
unpacked over it; ``qemu-aarch64-static`` is copied in and runs each command inside a chroot.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

__all__ = ["ForeignRoot", "unavailable"]

QEMU = "/usr/bin/qemu-aarch64-static"
PYTHON_PACKAGES = ("python3-minimal", "python3.11")


def unavailable() -> str:
    """Why an arm64 root cannot be made here (empty when it can): qemu-user-static is installed
    from Debian when missing, as root, as `make deb-deps` installs lintian."""
    if os.geteuid() != 0:
        return "needs root (chroot, apt-get)"
    if not shutil.which("apt-get") or not shutil.which("dpkg-deb"):
        return "needs apt-get and dpkg-deb"
    if not Path(QEMU).exists():
        result = subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "qemu-user-static"],
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        )
        if result.returncode != 0 or not Path(QEMU).exists():
            return f"qemu-user-static not installable: {result.stderr.strip()[-300:]}"
    return ""


class ForeignRoot:
    """An arm64 root at ``path`` with Python 3.11 and the given packages unpacked."""

    def __init__(self, path: Path, *debs: Path) -> None:
        self.root = path
        apt = path.parent / f"{path.name}-apt"
        archives = apt / "cache" / "archives"
        (apt / "lists" / "partial").mkdir(parents=True, exist_ok=True)
        (archives / "partial").mkdir(parents=True, exist_ok=True)
        (apt / "status").write_text("")
        options = [
            "-o", "APT::Architecture=arm64",
            "-o", "APT::Architectures::=arm64",
            "-o", f"Dir::State::Lists={apt / 'lists'}",
            "-o", f"Dir::Cache={apt / 'cache'}",
            "-o", f"Dir::State::status={apt / 'status'}",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip
        for args in (["update", "-q"], ["install", "--download-only", "-y", "-q", "--no-install-recommends"]):
            extra = list(PYTHON_PACKAGES) if args[0] == "install" else []
            result = subprocess.run(["apt-get", *options, *args, *extra], capture_output=True, text=True, timeout=600)
            if result.returncode != 0:
                raise RuntimeError(f"apt-get {args[0]} for arm64 failed: {result.stderr[-2000:]}")
        path.mkdir(parents=True, exist_ok=True)
        for deb in [*sorted(archives.glob("*.deb")), *debs]:
            subprocess.run(["dpkg-deb", "-x", str(deb), str(path)], check=True)
        shutil.copy2(QEMU, path / "usr" / "bin")

    def run(self, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` (an arm64 ELF path first) in the root under qemu-aarch64."""
        return subprocess.run(
            ["chroot", str(self.root), QEMU, *argv], capture_output=True, text=True, timeout=timeout_s
        )
