"""``python -m heatgate.agent.schemas [--write | --check]``: regenerate or verify the shipped JSON Schemas."""

from __future__ import annotations

import argparse
import sys

from heatgate.agent.schemas import differing, generate, shipped, write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m heatgate.agent.schemas", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", action="store_true", help="write agent/schemas/*.json from the types")
    group.add_argument("--check", action="store_true", help="exit 1 if shipped schemas differ in meaning")
    args = parser.parse_args(argv)
    if args.write:
        for path in write():
            print(path)
        return 0
    if args.check:
        differ = differing(generate(), shipped())
        if differ:
            print(f"schemas out of date: {', '.join(differ)}; run: make schemas", file=sys.stderr)
            return 1
        return 0
    for name, text in generate().items():
        print(f"# {name}\n{text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
