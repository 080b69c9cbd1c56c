"""Which machine every ELF file in a tree (or a .deb's data) was built for.

Used by ``build_deb.py`` before a package is written and by the tests on the finished package:
a wheel for the wrong platform that slipped into a package would only fail on the gateway.
"""

from __future__ import annotations

import struct
import sys
from collections.abc import Iterator
from pathlib import Path

ELF_MAGIC = b"\x7fELF"
# e_machine values (ELF gABI) of the architectures heatgate packages.
MACHINES = {62: "amd64", 183: "arm64", 40: "armhf", 3: "i386"}


def elf_arch(header: bytes) -> str | None:
    """The Debian architecture of an ELF header (the first 20 bytes suffice), or None if not ELF."""
    if len(header) < 20 or header[:4] != ELF_MAGIC:
        return None
    byte_order = "<" if header[5] == 1 else ">"
    (machine,) = struct.unpack_from(f"{byte_order}H", header, 18)
    return MACHINES.get(machine, f"e_machine={machine}")


def elf_files(root: Path) -> Iterator[tuple[Path, str]]:
    """Every regular ELF file under ``root`` with its architecture (symlinks are not followed)."""
    for path in sorted(root.rglob("*")):
        if path.is_symlink() or not path.is_file():
            continue
        with path.open("rb") as handle:
            arch = elf_arch(handle.read(20))
        if arch is not None:
            yield path, arch


def foreign_elf_files(root: Path, arch: str) -> list[str]:
    """``path: arch`` for each ELF file under ``root`` that is not for ``arch``."""
    return [f"{path.relative_to(root)}: {found}" for path, found in elf_files(root) if found != arch]


if __name__ == "__main__":
    tree, wanted = Path(sys.argv[1]), sys.argv[2]
    wrong = foreign_elf_files(tree, wanted)
    count = sum(1 for _ in elf_files(tree))
    for line in wrong:
        print(f"not {wanted}: {line}", file=sys.stderr)
    print(f"{count} ELF file(s) under {tree}, {len(wrong)} not for {wanted}")
    sys.exit(1 if wrong else 0)
