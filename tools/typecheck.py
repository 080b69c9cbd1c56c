"""`make typecheck`: mypy over the package, the tests and the benchmarks, and a count of what it checked.

mypy reports how many source files it checked. A misconfigured package mapping (the ``heatgate/``
folders are symlinks) does not fail: it silently checks two files and says "Success". So this
runs mypy as configured in pyproject.toml, prints its output, and fails when it checked fewer
sources than there are ``.py`` files under ``heatgate/`` (symlinks followed), ``tests/`` and
``bench/``. Exit: mypy's own code if it failed, else 1 on a short count, else 0.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from pathlib import Path

CHECKED_ROOTS = ("heatgate", "tests", "bench")
_COUNT = re.compile(r"(?:in|checked) (\d+) source files?\)?\s*$", re.MULTILINE)


def python_files(root: Path, folders: tuple[str, ...] = CHECKED_ROOTS) -> list[Path]:
    """Every ``.py`` file under ``folders`` of ``root``, following symlinked folders."""
    found: list[Path] = []
    for folder in folders:
        for directory, subdirs, files in os.walk(root / folder, followlinks=True):
            subdirs[:] = [d for d in subdirs if d != "__pycache__"]
            found.extend(Path(directory) / name for name in files if name.endswith(".py"))
    return sorted(found)


def checked_count(mypy_output: str) -> int | None:
    """The number of source files mypy says it checked (its last summary line), or None."""
    matches = _COUNT.findall(mypy_output)
    return int(matches[-1]) if matches else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args, mypy_args = parser.parse_known_args(argv)
    root: Path = args.root
    done = subprocess.run(
        [sys.executable, "-m", "mypy", *mypy_args], cwd=root, capture_output=True, text=True, check=False
    )
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != 0:
        return done.returncode
    expected = len(python_files(root))
    checked = checked_count(done.stdout)
    if checked is None:
        print("typecheck: mypy printed no source-file count", file=sys.stderr)
        return 1
    if checked < expected:
        print(
            f"typecheck: mypy checked {checked} source files, but {'/, '.join(CHECKED_ROOTS)}/ hold {expected} "
            "Python files: is the [tool.mypy] packages mapping right?",
            file=sys.stderr,
        )
        return 1
    print(f"typecheck: {checked} sources checked ({expected} Python files under {', '.join(CHECKED_ROOTS)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
