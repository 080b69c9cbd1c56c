"""A throwaway root for installing a Debian package with dpkg, maintainer scripts and all.

The root is this machine's ``/usr``, ``/etc`` and ``/var`` as overlays (writes land in an upper
directory under the test's tmp path; the host's are never changed) plus empty ``/opt``, ``/tmp``
and ``/run``, so dpkg's database there starts as a copy of this machine's and the package's
dependencies (python3, adduser, init-system-helpers) are already installed. Every command runs
in its own mount namespace (``unshare --mount``): the mounts vanish with it, nothing to undo.
``dpkg --root`` chroots into it for the maintainer scripts, which create the service user in the
overlay's ``/etc/passwd``.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from pathlib import Path

PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def available() -> str:
    """Why a throwaway root cannot be made here, or '' when it can."""
    if os.geteuid() != 0:
        return "needs root (mount, chroot, dpkg --root)"
    for tool in ("unshare", "chroot", "dpkg", "adduser"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed"
    if not Path("/usr/bin/python3").exists():
        return "no system /usr/bin/python3"
    return ""


class ThrowawayRoot:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.root = base / "root"
        for name in ("usr", "etc", "var"):
            (base / "upper" / name).mkdir(parents=True)
            (base / "work" / name).mkdir(parents=True)
            (self.root / name).mkdir(parents=True)
        for name in ("opt", "run", "dev", "proc", "root"):
            (self.root / name).mkdir()
        (self.root / "tmp").mkdir(mode=0o1777)
        os.chmod(self.root / "tmp", 0o1777)
        for link in ("bin", "lib", "lib64", "sbin"):
            host = Path("/") / link
            if host.is_symlink():
                (self.root / link).symlink_to(os.readlink(host))

    def _mounts(self) -> str:
        lines = ["set -e"]
        for name in ("usr", "etc", "var"):
            options = f"lowerdir=/{name},upperdir={self.base}/upper/{name},workdir={self.base}/work/{name}"
            lines.append(f"mount -t overlay overlay -o {options} {self.root}/{name}")
        lines.append(f"mount --rbind /dev {self.root}/dev")
        lines.append(f"mount --rbind /proc {self.root}/proc")
        return "\n".join(lines)

    def host(self, script: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``script`` (bash) on this machine with the root mounted at ``$ROOT``."""
        body = f"{self._mounts()}\nset +e\nROOT={shlex.quote(str(self.root))}\n{script}\n"
        return subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "bash", "-c", body],
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env={"PATH": PATH, "LC_ALL": "C.UTF-8"},
            stdin=subprocess.DEVNULL,
        )

    def run(self, *argv: str, user: str | None = None, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside the root (as ``user`` with the user's groups, when given)."""
        chroot = ["chroot"]
        if user is not None:
            groups = f"$(chroot $ROOT id -Gn {user} | tr ' ' ',')"
            chroot += [f"--userspec={user}:{user}", f'--groups="{groups}"']
        env = f"env -i PATH={PATH} LC_ALL=C.UTF-8 HOME=/root TERM=dumb"
        command = " ".join(shlex.quote(a) for a in argv)
        return self.host(f"{' '.join(chroot)} $ROOT {env} {command}", timeout_s=timeout_s)

    def path(self, inside: str) -> Path:
        """Where a path inside the root is, once mounted (only /opt, /tmp, /run are readable without)."""
        return self.root / inside.lstrip("/")
