"""The import contract of heatgate's layers, checked over every import (module level, in functions,
under ``TYPE_CHECKING``). Run by ``make lint``; exit 1 with one line per violation.

    heatgate.agent      composes everything below it
    heatgate.drivers    ─┐ use only the shared root modules, the shipped data (heatgate.config)
    heatgate.buffer     ─┘ and themselves; never heatgate.agent, never each other
    heatgate.<module>   the shared root (backoff, logs, typedload, settings, errors): imports no layer

Fenced: the simulators (``heatgate.drivers.sim``) and the dev tools (``heatgate.agent.devtools``:
demo, local broker, test CA) are imported only by each other, by the CLI commands that run them
(``heatgate sim``, ``heatgate demo``), by tests and by benchmarks. Anywhere in the tree, the old
top-level names (``agent``, ``drivers``, ``buffer``, ``config``) are not imported at all, and
nothing outside ``tests`` (product, benchmarks, tools) imports a test module.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAYER_FOLDERS = ("agent", "drivers", "buffer", "config")
FENCED = ("heatgate.drivers.sim", "heatgate.agent.devtools")
FENCE_OPENERS = ("heatgate.agent.cli.sim", "heatgate.agent.cli.demo")
MAY_IMPORT = {
    "root": {"root"},
    "config": {"root", "config"},
    "buffer": {"root", "config", "buffer"},
    "drivers": {"root", "config", "drivers"},
    "agent": {"root", "config", "buffer", "drivers", "agent"},
}


@dataclass(frozen=True)
class Violation:
    path: Path
    line: int
    importer: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}: {self.rule}"


def module_name(root: Path, path: Path) -> str:
    """The dotted name a file has: ``agent/daemon.py`` -> ``heatgate.agent.daemon``."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[0] in LAYER_FOLDERS:
        parts.insert(0, "heatgate")
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "heatgate":
        return None
    if len(parts) > 1 and parts[1] in LAYER_FOLDERS:
        return parts[1]
    if parts[1:2] == ["__main__"]:
        return "agent"  # `python -m heatgate` is the CLI
    return "root"


def imports_of(module: str, is_package: bool, tree: ast.AST) -> Iterator[tuple[int, str]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_package else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            yield node.lineno, target
            for alias in node.names:  # `from heatgate.drivers import sim` imports a module too
                yield node.lineno, f"{target}.{alias.name}"


def within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def check_file(root: Path, path: Path) -> list[Violation]:
    importer = module_name(root, path)
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    in_product = layer_of(importer) is not None
    violations: list[Violation] = []
    reported: set[tuple[int, str]] = set()
    for line, imported in imports_of(importer, path.name == "__init__.py", tree):
        head = imported.split(".")[0]

        def add(rule: str, line: int = line, imported: str = imported) -> None:
            if (line, rule) not in reported:  # `from a.b import C` reports a.b, not also a.b.C
                reported.add((line, rule))
                violations.append(Violation(path.relative_to(root), line, importer, imported, rule))

        if head in LAYER_FOLDERS:
            add(f"the top-level name '{head}' is not installed; import it as heatgate.{head}")
            continue
        if head == "tests" and not within(importer, "tests"):
            add("only tests import the tests package; what others need lives in heatgate.agent.devtools")
            continue
        if head != "heatgate" or not in_product:
            continue
        source_layer, target_layer = layer_of(importer), layer_of(imported)
        if target_layer is None or source_layer is None:
            continue
        if target_layer not in MAY_IMPORT[source_layer]:
            add(f"layer '{source_layer}' may not import layer '{target_layer}'")
        fenced = next((f for f in FENCED if within(imported, f)), None)
        if fenced and not any(within(importer, f) for f in (*FENCED, *FENCE_OPENERS)):
            add(f"production code may not import {fenced} (simulators and dev tools are fenced)")
    return violations


def python_files(root: Path, folders: tuple[str, ...]) -> Iterator[Path]:
    for folder in folders:
        base = root / folder
        if base.is_file():
            yield base
            continue
        for path in sorted(base.rglob("*.py")):
            if "__pycache__" not in path.parts:
                yield path


def check(root: Path, folders: tuple[str, ...]) -> list[Violation]:
    files = [p for p in python_files(root, folders) if not (p.parent == root / "heatgate" and p.is_symlink())]
    return [v for path in files for v in check_file(root, path)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args(argv)
    root: Path = args.root
    folders = tuple(f for f in (*LAYER_FOLDERS, "tests", "bench", "tools") if (root / f).exists())
    heatgate_root = tuple(f"heatgate/{p.name}" for p in sorted((root / "heatgate").glob("*.py")))
    violations = check(root, (*heatgate_root, *folders))
    for violation in violations:
        print(violation)
    count = sum(1 for _ in python_files(root, (*heatgate_root, *folders)))
    print(f"import contract: {len(violations)} violation(s) in {count} files", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
