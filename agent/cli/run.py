"""``heatgate run``: the daemon."""

from __future__ import annotations

import argparse
import asyncio
import sys

from heatgate.agent.cli.common import add_config_option, load_or_report

DESCRIPTION = """\
Runs the agent in the foreground until SIGTERM or SIGINT: polls every configured source,
routes each reading through the privacy pipeline into its purpose streams, commits the
records encrypted to the buffer, publishes them to the broker (faults first) and deletes them
when the broker has acknowledged them. Answers `heatgate status` on its unix socket and
accepts signed commands on <prefix>/<gateway>/cmd/<name> when a command key is pinned.

Under systemd (Type=notify) it reports READY, a one-line STATUS and WATCHDOG pings; if its
event loop stalls past WatchdogSec it dumps every thread's traceback and exits so that
systemd restarts it. On SIGTERM it stops polling, commits what it has, publishes `offline`
and exits 0 within a few seconds.

On SIGHUP (`systemctl reload heatgate`) it re-reads and validates the config file for the
privacy policy it names, the policy itself and the privacy state (consent, objection,
restriction), and applies them without dropping a reading or the broker connection. A file
that does not validate changes nothing: the error is logged and shown by `heatgate status`.
Sources, [mqtt], keys, buffer, gateway, status socket, the pseudonym epoch, a policy's retention
periods and the log level need `systemctl restart heatgate`; a reload that finds them changed
says so in `heatgate status`. Every reload is audited (agent.reload).

One agent per state directory: it locks <state_dir>/agent.lock first; a second agent on the
same state directory exits 1 naming the PID of the first, without touching its buffer or broker.

Logs go to standard output as JSON lines (for journald) unless it is a terminal.
exit status: 0 after a clean stop, 1 on a runtime failure, 2 on bad config or keys.
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the agent (the daemon) in the foreground",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_option(parser)
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    from heatgate import logs
    from heatgate.agent.daemon import Agent

    loaded = load_or_report(args.config)
    if loaded is None:
        return 2
    logs.configure(level=args.log_level, stream=sys.stdout)
    return asyncio.run(Agent(loaded).run())
