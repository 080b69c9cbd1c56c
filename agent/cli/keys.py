"""``heatgate keys generate``: the backend's command key, an operator's approval key, or an
export recipient's key pair."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from heatgate.agent.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from heatgate.agent.commands.keys import KEY_NAMES, CommandKeyFileError
from heatgate.agent.commands.private_keys import generate_key_pair

HELP = """\
Write a key pair into DIR: NAME.key (private, PKCS#8 PEM, mode 0600) and NAME.pub (public PEM),
and print the key id (first 16 hex digits of SHA-256 of the raw public key).

  command    Ed25519: the backend signs commands; pin command.pub on each gateway
  approval   Ed25519: an operator approves device writes; pin approval.pub on each gateway
  recipient  X25519: the requester of a privacy export; results are sealed to recipient.pub
"""


def register(subparsers: Any) -> None:
    keys = subparsers.add_parser(
        "keys", help="generate command, approval and recipient key pairs", description="Key pairs for signed commands."
    )
    sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True, parser_class=type(keys))
    generate = sub.add_parser(
        "generate",
        help="write a key pair and print its key id",
        description=HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    generate.add_argument("--out", type=Path, required=True, metavar="DIR", help="directory for the key files")
    generate.add_argument("--name", choices=KEY_NAMES, default="command", help="which key (default: command)")
    generate.add_argument("--force", action="store_true", help="replace existing files")
    generate.set_defaults(handler=run_generate)


def run_generate(args: argparse.Namespace) -> int:
    try:
        private, public, kid = generate_key_pair(args.out, args.name, overwrite=args.force)
    except CommandKeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE if "exists" in exc.reason else EXIT_FAILURE
    except OSError as exc:
        print(f"error: {args.out}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILURE
    print(f"key id {kid}")
    print(f"private {private} (keep secret)")
    print(f"public  {public}")
    return EXIT_OK
