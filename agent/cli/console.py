"""Rich consoles for the CLI's output: never cut when piped, and one answer to a closed pipe.

On a terminal a console takes the terminal's width. Piped or redirected, rich would assume 80
columns (or ``COLUMNS``) and wrap or cut tables; here it gets no practical width limit instead,
so that ``heatgate status > file`` and ``| grep`` see whole lines.

A reader that stops early (``| head``) closes the pipe: rich would redirect stdout to
/dev/null and exit 1 on its own. These consoles let the ``BrokenPipeError`` through, so that
the entry point (:func:`agent.cli.main`) handles it once for every command, printed by rich or
not.
"""

from __future__ import annotations

import errno
import sys
from typing import Any

from rich.console import Console

__all__ = ["PIPED_WIDTH_COLUMNS", "error_console", "output_console"]

PIPED_WIDTH_COLUMNS = 4096
"""Width of a console whose output is not a terminal: wide enough that no line is wrapped."""


class _Console(Console):
    def on_broken_pipe(self) -> None:
        raise BrokenPipeError(errno.EPIPE, "the reader closed standard output")


def _width(stream: Any) -> int | None:
    # Not COLUMNS either when piped: shells and CI runners export it for their terminal.
    return None if stream.isatty() else PIPED_WIDTH_COLUMNS


def output_console(**options: Any) -> Console:
    """A console on standard output (``highlight=False`` unless given)."""
    options.setdefault("highlight", False)
    return _Console(width=_width(sys.stdout), **options)


def error_console(**options: Any) -> Console:
    """A console on standard error (``highlight=False`` unless given)."""
    options.setdefault("highlight", False)
    return _Console(stderr=True, width=_width(sys.stderr), **options)
