"""Run ``python -m heatgate …`` and, when it exits, write the top-level packages it imported.

    python -m bench.agent_modules OUT_FILE run --config FILE

The whole-agent bench (``--modules``) starts the agent this way to check what the daemon keeps
out (sqlite-utils, rich, click, pluggy, dateutil …): ``sys.modules`` at exit, imports that
failed (``None`` entries, e.g. structlog's probe for rich) left out. The agent stops on SIGTERM
through its normal path, so the list is written.
"""

from __future__ import annotations

import atexit
import runpy
import sys
from pathlib import Path


def _write(out: Path) -> None:
    names = sorted({name.split(".")[0] for name, module in list(sys.modules.items()) if module is not None})
    out.write_text("\n".join(names) + "\n")


def main() -> None:
    out = Path(sys.argv[1])
    sys.argv = ["heatgate", *sys.argv[2:]]
    atexit.register(_write, out)
    runpy.run_module("heatgate", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
