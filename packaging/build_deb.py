"""Build heatgate's Debian package for one or more architectures: ``dist/heatgate_<version>_<arch>.deb``.

The package holds heatgate and its locked runtime dependencies in ``/opt/heatgate``, a venv-like
tree over the system ``/usr/bin/python3`` (``pyvenv.cfg`` with ``home = /usr/bin``; one
``lib/pythonX.Y/site-packages`` per supported Python, so the same package runs on Raspberry Pi
OS bookworm (3.11) and trixie (3.13); identical pure-Python entries are symlinked to the first
tree). Foreign architectures are built on this machine from binary wheels that pip fetches for
the target platform; every ELF file is checked to be for the package's architecture.

Run with the project's venv python (it needs pip): ``make deb`` does.
"""

from __future__ import annotations

import argparse
import filecmp
import gzip
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from email.parser import HeaderParser
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from elfcheck import foreign_elf_files

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "packaging"
PREFIX = "opt/heatgate"
DEBIAN_REVISION = "1"
MACHINES = {"amd64": "x86_64", "arm64": "aarch64"}
GLIBC_CEILING = 36  # bookworm's glibc 2.36: no wheel may need newer
PYTHONS = ("3.11", "3.12", "3.13")
MAINTAINER = os.environ.get("DEB_MAINTAINER", "heatgate maintainers <packaging@heatgate.dev>")

LAUNCHER = """\
#!/opt/heatgate/bin/python3
# heatgate's command line, on the system python3 with the packaged dependencies (pyvenv.cfg).
import sys

from heatgate.agent.cli import main

sys.exit(main())
"""


class BuildError(Exception):
    def __init__(self, step: str, detail: str) -> None:
        super().__init__(f"{step}: {detail}")
        self.step = step
        self.detail = detail


def _run(step: str, argv: list[str], **kwargs: object) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"
        stderr = "\n".join(line for line in result.stderr.splitlines() if noise not in line)
        raise BuildError(step, f"{' '.join(argv[:6])} … exited {result.returncode}\n{stderr[-3000:]}")


def project_version() -> str:
    with (ROOT / "pyproject.toml").open("rb") as handle:
        return str(tomllib.load(handle)["project"]["version"])


def build_heatgate_wheel(work: Path) -> Path:
    """From a copy of the tree: setuptools leaves build/lib behind in the tree it builds."""
    tree = work / "src"
    ignore = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", ".*_cache")
    shutil.copytree(ROOT, tree, symlinks=True, ignore=ignore)
    out = work / "heatgate-wheel"
    _run(
        "heatgate wheel",
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(out), str(tree)],
    )
    (wheel,) = out.glob("heatgate-*.whl")
    return wheel


def resolve(wheel: Path, lock: Path, work: Path) -> tuple[Path, list[str]]:
    """Resolve the runtime closure once, on this machine, under the lock. Returns a directory of
    the pure wheels (a dependency published only as an sdist is built here and must come out
    pure, ``none-any``) and the ``name==version`` of each compiled one, to fetch per target."""
    resolved, pure = work / "resolved", work / "pure"
    _run("resolve", [sys.executable, "-m", "pip", "download", "-q", "-c", str(lock), "-d", str(resolved), str(wheel)])
    pure.mkdir(exist_ok=True)
    compiled = []
    for found in sorted(resolved.iterdir()):
        if found.name.endswith("-none-any.whl"):
            shutil.copyfile(found, pure / found.name)
        elif found.suffix == ".whl":
            name, version = found.name.split("-")[:2]
            compiled.append(f"{name}=={version}")
        else:
            _run(
                f"wheel of {found.name}",
                [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(pure), str(found)],
            )
    for built in pure.glob("*.whl"):
        if not built.name.endswith("-none-any.whl"):
            raise BuildError("pure wheels", f"{built.name} has compiled code and no binary wheel on PyPI")
    return pure, compiled


def _target_options(arch: str, python: str) -> list[str]:
    machine = MACHINES[arch]
    platforms = [f"manylinux2014_{machine}"] + [
        f"manylinux_2_{minor}_{machine}" for minor in range(17, GLIBC_CEILING + 1)
    ]
    nodot = python.replace(".", "")
    options = ["--only-binary=:all:", "--python-version", python, "--implementation", "cp"]
    for abi in (f"cp{nodot}", "abi3", "none"):
        options += ["--abi", abi]
    for platform in platforms:
        options += ["--platform", platform]
    return options


def fetch_compiled(compiled: list[str], arch: str, python: str, work: Path) -> Path:
    """The binary wheels of the compiled dependencies for one target, at the resolved versions."""
    dest = work / f"wheels-{arch}-py{python}"
    dest.mkdir(exist_ok=True)
    if compiled:
        argv = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", *_target_options(arch, python)]
        _run(f"wheels for {arch} python {python}", [*argv, "-d", str(dest), *compiled])
    return dest


def install_wheels(wheel_dirs: list[Path], site: Path, arch: str, python: str) -> None:
    files = sorted(str(w) for d in wheel_dirs for w in d.glob("*.whl"))
    argv = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--no-compile"]
    _run(f"install {arch} python {python}", [*argv, *_target_options(arch, python), "--target", str(site), *files])
    shutil.rmtree(site / "bin", ignore_errors=True)  # pip's console scripts, with this machine's shebang
    for cache in site.rglob("__pycache__"):
        shutil.rmtree(cache)


def glibc_needed(wheel_dirs: list[Path]) -> str:
    """The glibc the chosen wheels need: the highest of each wheel's lowest manylinux tag."""
    floors = [_wheel_floor(wheel) for directory in wheel_dirs for wheel in directory.glob("*.whl")]
    return f"2.{max(floors, default=17)}"


def _wheel_floor(wheel: Path) -> int:
    minors = [int(m) for m in re.findall(r"manylinux_2_(\d+)_", wheel.name)]
    if "manylinux2014" in wheel.name:
        minors.append(17)
    return min(minors) if minors else 17


def share_identical(first: Path, other: Path) -> None:
    """Replace each top-level entry of ``other`` that equals the one in ``first`` by a relative symlink."""
    for entry in sorted(other.iterdir()):
        twin = first / entry.name
        if not twin.exists() or entry.is_dir() != twin.is_dir():
            continue
        same = _same_tree(entry, twin) if entry.is_dir() else filecmp.cmp(entry, twin, shallow=False)
        if same:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
            entry.symlink_to(Path("..") / ".." / first.parent.name / first.name / entry.name)


def _same_tree(a: Path, b: Path) -> bool:
    compare = filecmp.dircmp(a, b)
    if compare.left_only or compare.right_only or compare.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, compare.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in compare.common_dirs)


def _license_of(dist_info: Path) -> str:
    headers = HeaderParser().parsestr((dist_info / "METADATA").read_text(errors="replace"))
    value = headers.get("License-Expression") or ""
    if not value:
        license_field = (headers.get("License") or "").strip()
        value = license_field.splitlines()[0] if license_field and len(license_field) < 80 else ""
    if not value:
        classifiers = [
            c.split("::")[-1].strip() for c in headers.get_all("Classifier") or [] if c.startswith("License ::")
        ]
        value = " or ".join(classifiers)
    return value or "see its dist-info in /opt/heatgate"


def write_copyright(site: Path, target: Path) -> None:
    lines = [
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/",
        "Upstream-Name: heatgate",
        "Comment: heatgate bundles its locked Python dependencies in /opt/heatgate; each one's",
        " license text is in its dist-info directory there.",
        "",
        "Files: *",
        "Copyright: heatgate contributors",
        "License: Apache-2.0",
        " On Debian systems, the full text is in /usr/share/common-licenses/Apache-2.0.",
    ]
    for dist_info in sorted(site.glob("*.dist-info")):
        name, _, version = dist_info.name.removesuffix(".dist-info").partition("-")
        if name == "heatgate":
            continue
        lines += [
            "",
            f"Files: {PREFIX}/lib/python*/site-packages/{name}*",
            f"Copyright: the authors of {name} {version}",
            f"License: {_license_of(dist_info)}",
            f" See {PREFIX}/lib/python3.*/site-packages/{dist_info.name}/.",
        ]
    target.write_text("\n".join(lines) + "\n")


def _gzip_file(source_text: str, target: Path) -> None:
    with target.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz:
        gz.write(source_text.encode())


def stage_files(stage: Path, site_first: Path, version: str, date: str) -> None:
    prefix = stage / PREFIX
    (prefix / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    (prefix / "bin").mkdir(parents=True, exist_ok=True)
    (prefix / "bin" / "python3").symlink_to("/usr/bin/python3")
    launcher = prefix / "bin" / "heatgate"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    usr_bin = stage / "usr" / "bin"
    usr_bin.mkdir(parents=True)
    (usr_bin / "heatgate").symlink_to(f"/{PREFIX}/bin/heatgate")
    units = stage / "usr" / "lib" / "systemd" / "system"
    units.mkdir(parents=True)
    shutil.copyfile(ROOT / "systemd" / "heatgate.service", units / "heatgate.service")
    doc = stage / "usr" / "share" / "doc" / "heatgate"
    doc.mkdir(parents=True)
    write_copyright(site_first, doc / "copyright")
    shutil.copyfile(ROOT / "README.md", doc / "README.md")
    changelog = (
        f"heatgate ({version}) stable; urgency=medium\n\n"
        f"  * Release {version}: see README.md.\n\n"
        f" -- {MAINTAINER}  {date}\n"
    )
    _gzip_file(changelog, doc / "changelog.Debian.gz")
    man = stage / "usr" / "share" / "man" / "man1"
    man.mkdir(parents=True)
    _gzip_file((HERE / "debian" / "heatgate.1").read_text(), man / "heatgate.1.gz")
    overrides = stage / "usr" / "share" / "lintian" / "overrides"
    overrides.mkdir(parents=True)
    shutil.copyfile(HERE / "debian" / "lintian-overrides", overrides / "heatgate")


def write_control(stage: Path, version: str, arch: str, glibc: str, pythons: tuple[str, ...]) -> None:
    control_dir = stage / "DEBIAN"
    control_dir.mkdir()
    for script in ("postinst", "prerm", "postrm"):
        shutil.copyfile(HERE / "debian" / script, control_dir / script)
        (control_dir / script).chmod(0o755)
    sums, size_kib = [], 0
    for path in sorted(stage.rglob("*")):
        if control_dir in path.parents:
            continue
        size_kib += 1 if path.is_dir() or path.is_symlink() else -(-path.stat().st_size // 1024)
        if path.is_file() and not path.is_symlink():
            sums.append(f"{hashlib.md5(path.read_bytes()).hexdigest()}  {path.relative_to(stage)}")
    (control_dir / "md5sums").write_text("\n".join(sums) + "\n")
    top = pythons[-1].split(".")
    ceiling = f"{top[0]}.{int(top[1]) + 1}~"
    control = f"""\
Package: heatgate
Version: {version}
Architecture: {arch}
Maintainer: {MAINTAINER}
Installed-Size: {size_kib}
Depends: python3 (>= {pythons[0]}~), python3 (<< {ceiling}), libc6 (>= {glibc}), adduser, init-system-helpers (>= 1.54~)
Section: net
Priority: optional
Homepage: https://heatgate.invalid/
Description: edge gateway agent for heat pumps, meters, P1 and Z-Wave
 heatgate reads heat pumps, energy meters, the Dutch smart meter (P1) and
 Z-Wave sensors, reduces their readings to what each purpose needs, keeps them
 encrypted on the device for no longer than allowed and publishes them over
 MQTT with mutual TLS.
 .
 The agent and its locked Python dependencies live in /opt/heatgate and run
 on the system python3 ({", ".join(pythons)}).
"""
    (control_dir / "control").write_text(control)


def build(
    arch: str, pure: Path, compiled: list[str], work: Path, out: Path, pythons: tuple[str, ...], xz_level: int = 6
) -> Path:
    version = f"{project_version()}-{DEBIAN_REVISION}"
    stage = work / f"stage-{arch}"
    shutil.rmtree(stage, ignore_errors=True)
    wheel_dirs, sites = [], []
    for python in pythons:
        wheels = fetch_compiled(compiled, arch, python, work)
        site = stage / PREFIX / "lib" / f"python{python}" / "site-packages"
        install_wheels([pure, wheels], site, arch, python)
        wheel_dirs.append(wheels)
        sites.append(site)
    for site in sites[1:]:
        share_identical(sites[0], site)
    wrong = foreign_elf_files(stage, arch)
    if wrong:
        raise BuildError("architecture check", "\n".join(wrong))
    date = (
        subprocess.run(
            ["git", "-C", str(ROOT), "log", "-1", "--format=%aD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        or "Thu, 01 Jan 2026 00:00:00 +0000"
    )
    stage_files(stage, sites[0], version, date)
    for path in stage.rglob("*"):  # what dpkg-deb packs: 0755 directories, 0644 files but the launcher
        if not path.is_symlink():
            path.chmod(0o755 if path.is_dir() or path == stage / PREFIX / "bin" / "heatgate" else 0o644)
    write_control(stage, version, arch, glibc_needed(wheel_dirs), pythons)
    out.mkdir(parents=True, exist_ok=True)
    deb = out / f"heatgate_{version}_{arch}.deb"
    _run("dpkg-deb", ["dpkg-deb", "--root-owner-group", "-Zxz", f"-z{xz_level}", "--build", str(stage), str(deb)])
    return deb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", nargs="+", default=["amd64", "arm64"], choices=sorted(MACHINES))
    parser.add_argument("--python", nargs="+", default=list(PYTHONS), help="Python versions to carry modules for")
    parser.add_argument("--out", type=Path, default=ROOT / "dist")
    parser.add_argument("--lock", type=Path, default=ROOT / "requirements" / "lock.txt")
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument("--xz-level", type=int, default=6, choices=range(10), help="compression (default: 6)")
    args = parser.parse_args(argv)
    pythons = tuple(sorted(args.python, key=lambda v: tuple(int(p) for p in v.split("."))))
    with tempfile.TemporaryDirectory(prefix="heatgate-deb-") as scratch:
        work = args.work or Path(scratch)
        work.mkdir(parents=True, exist_ok=True)
        try:
            wheel = build_heatgate_wheel(work)
            pure, compiled = resolve(wheel, args.lock, work)
            shutil.copyfile(wheel, pure / wheel.name)
            for arch in args.arch:
                deb = build(arch, pure, compiled, work, args.out, pythons, args.xz_level)
                print(f"built {deb.relative_to(ROOT) if deb.is_relative_to(ROOT) else deb}")
        except BuildError as exc:
            print(f"make deb: {exc}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    os.umask(0o022)
    sys.exit(main())
