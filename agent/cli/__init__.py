"""The ``heatgate`` command line.

Each subcommand lives in its own module under ``agent/cli/`` with a ``register(subparsers)``
function that adds its parser and sets ``handler`` to a function taking the parsed arguments
and returning the exit code. A subcommand is listed in :data:`COMMAND_MODULES` only once it
works: there are no stubs.

Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad config. A reader that closes the
output early (``heatgate status --json | head -1``) is not a failure: the command ends quietly
with the code it had, or 0 if the closed pipe interrupted it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from heatgate import __version__

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

# Order here is the order in ``heatgate --help``.
COMMAND_MODULES: tuple[str, ...] = (
    "heatgate.agent.cli.run",
    "heatgate.agent.cli.check_config",
    "heatgate.agent.cli.provision",
    "heatgate.agent.cli.doctor",
    "heatgate.agent.cli.status",
    "heatgate.agent.cli.demo",
    "heatgate.agent.cli.privacy",
    "heatgate.agent.cli.sim",
    "heatgate.agent.cli.scan",
    "heatgate.agent.cli.read",
    "heatgate.agent.cli.profile",
    "heatgate.agent.cli.tail",
    "heatgate.agent.cli.keys",
    "heatgate.agent.cli.cmd",
    "heatgate.agent.cli.zwave",
)

DESCRIPTION = """\
heatgate is the edge gateway agent for installed heating and smart-home hardware. It reads
heat pumps and energy meters (Modbus TCP/RTU), the Dutch smart meter (P1) and Z-Wave sensors,
keeps only what each purpose needs, pseudonymises identifiers on the device, buffers the
result encrypted with fixed retention, and publishes service data, telemetry and audit
records to the service company's MQTT broker over mutual TLS.
"""

EPILOG = """\
exit status:
  0  success
  1  runtime failure (a device, the broker, the disk)
  2  bad usage or bad configuration (every problem is listed with its location)

examples:
  heatgate check-config --config /etc/heatgate/heatgate.toml
  heatgate <command> --help

Logs are JSON lines when standard error is not a terminal (for journald), readable text otherwise.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _command_name(module_name: str) -> str:
    return module_name.rsplit(".", 1)[-1].replace("_", "-")


def _requested_command(argv: Sequence[str]) -> str | None:
    """The subcommand named on the command line, if any (global options skipped)."""
    words = list(argv)
    index = 0
    while index < len(words):
        word = words[index]
        if word == "--log-level":
            index += 2
            continue
        if word.startswith("-"):
            index += 1
            continue
        return word
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just that subcommand: a command imports only
    its own module, so that `heatgate run` carries none of the installer tools' libraries."""
    parser = _Parser(
        prog="heatgate",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"heatgate {__version__}")
    parser.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (default: info)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    modules = [m for m in COMMAND_MODULES if only is None or _command_name(m) == only] or COMMAND_MODULES
    for module_name in modules:
        module = importlib.import_module(module_name)
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; its exit code."""
    code: int | None = None
    try:
        code = _run(argv)
        sys.stdout.flush()
    except BrokenPipeError:
        # As the Python docs advise (signal module, "Note on SIGPIPE"): point stdout at
        # /dev/null so that the interpreter's final flush does not fail again on exit.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return EXIT_OK if code is None else code
    return code


def _run(argv: Sequence[str] | None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    command = _requested_command(words)
    if command == "run" and "rich" not in sys.modules:
        # The daemon never draws on a terminal. structlog imports rich (and pygments) for
        # pretty tracebacks when it can: ~15 MiB of resident memory on a 1 GiB board for
        # nothing. Marking it absent makes structlog fall back to plain tracebacks.
        sys.modules["rich"] = None  # type: ignore[assignment]
    parser = build_parser(command)
    args = parser.parse_args(words)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from heatgate import logs

    logs.configure(level=args.log_level)
    try:
        code: int = args.handler(args)
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
