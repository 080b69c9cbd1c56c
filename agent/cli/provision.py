"""``heatgate provision``: set up a gateway's state directory, keys, CSR and config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.prompt import Prompt

from heatgate.agent.cli.common import print_config_error
from heatgate.agent.cli.console import error_console, output_console
from heatgate.agent.config import load_config
from heatgate.agent.provision import Answers, ProvisionError, provision
from heatgate.typedload import ConfigError

DESCRIPTION = """\
Prepares this gateway, in the order an installer needs it:
  1. the state directory (mode 0700, owned by the service user with --owner);
  2. the 256-bit master key that wraps every data key (0600; never overwritten without --force,
     and not even then while the buffer holds records, unless --discard-buffer); as root with
     --owner and where systemd-creds exists, also sealed as the systemd credential
     heatgate-master-key in /etc/credstore.encrypted, with a unit drop-in that loads it;
  3. the device's own key pair and a certificate signing request whose subject is the gateway
     id and nothing else, for the service company's CA;
  4. the backend's command-verification and approval public keys, pinned;
  5. the configuration file, from the flags or from answers at the prompt (root:<group of
     --owner> 0640, so that the service user can read it and only root can change it).
Running it again keeps what exists and completes what is missing. Pseudonymisation keys are
made on the device at the agent's first start and never leave it.

example:
  heatgate provision --gateway-id gw-0042-nl --region "3511 AB" \\
      --broker-url mqtts://mqtt.service.example:8883 --ca ca.pem \\
      --command-key command.pub --approval-key approval.pub --owner heatgate
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "provision",
        help="create the state directory, keys, certificate request and config of a gateway",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--gateway-id", help="this gateway's id (the certificate subject)")
    parser.add_argument("--region", help='the postcode or region, e.g. "3511 AB" (only "35" ever leaves)')
    parser.add_argument("--broker-url", help="mqtts://host:port of the service broker")
    parser.add_argument(
        "--state-dir", type=Path, default=Path("/var/lib/heatgate"), help="state directory (default: /var/lib/heatgate)"
    )
    parser.add_argument(
        "--config-out",
        type=Path,
        default=Path("/etc/heatgate/heatgate.toml"),
        help="where to write the config (default: /etc/heatgate/heatgate.toml)",
    )
    parser.add_argument("--ca", type=Path, help="the CA certificate that signed the broker's certificate")
    parser.add_argument("--command-key", type=Path, help="the backend's Ed25519 command public key (PEM)")
    parser.add_argument("--approval-key", type=Path, help="the operators' Ed25519 approval public key (PEM)")
    parser.add_argument("--sources", type=Path, help="a TOML file of [[sources]] tables to include")
    parser.add_argument("--owner", help="user that runs the agent (files are chowned to it; needs root)")
    parser.add_argument("--force", action="store_true", help="replace existing keys and config")
    parser.add_argument(
        "--discard-buffer",
        action="store_true",
        help="with --force: delete the buffer and the records in it, which the new master key could not read",
    )
    parser.add_argument(
        "--no-credential",
        action="store_true",
        help="do not seal the master key with systemd-creds: the agent reads the 0600 key file",
    )
    parser.set_defaults(handler=run)


def _ask(value: str | None, prompt: str, missing: list[str], flag: str) -> str:
    if value:
        return value
    if sys.stdin.isatty():
        answer = Prompt.ask(prompt).strip()
        if answer:
            return answer
    missing.append(flag)
    return ""


def run(args: argparse.Namespace) -> int:
    err = error_console()
    missing: list[str] = []
    gateway_id = _ask(args.gateway_id, "Gateway id", missing, "--gateway-id")
    region = _ask(args.region, "Postcode or region", missing, "--region")
    broker_url = _ask(args.broker_url, "Broker URL (mqtts://host:8883)", missing, "--broker-url")
    if missing:
        err.print(f"[bold red]error[/]: missing {', '.join(missing)} (give them as flags or run interactively)")
        return 2
    if not args.state_dir.is_absolute():
        err.print(f"[bold red]error[/]: --state-dir must be absolute, got {args.state_dir}")
        return 2
    sources_toml = ""
    if args.sources is not None:
        try:
            sources_toml = args.sources.read_text()
        except OSError as exc:
            err.print(f"[bold red]error[/]: --sources: {exc}")
            return 2
    answers = Answers(
        gateway_id=gateway_id,
        region=region,
        state_dir=args.state_dir.resolve(),
        config_path=args.config_out,
        broker_url=broker_url,
        ca_file=args.ca,
        command_public_key=args.command_key,
        approval_public_key=args.approval_key,
        owner=args.owner,
        sources_toml=sources_toml,
        seal_credential=not args.no_credential,
    )
    if args.discard_buffer and not args.force:
        err.print("[bold red]error[/]: --discard-buffer only goes with --force")
        return 2
    try:
        report = provision(answers, force=args.force, discard_buffer=args.discard_buffer)
    except ProvisionError as exc:
        err.print(f"[bold red]error[/]: {exc}")
        return 2
    except PermissionError as exc:
        err.print(f"[bold red]error[/]: {exc} (run as root, or choose --state-dir and --config-out you can write)")
        return 1
    out = output_console(soft_wrap=True)
    for item in report.created:
        out.print(f"[green]created[/] {item}")
    for item in report.kept:
        out.print(f"[dim]kept[/]    {item}")
    try:
        load_config(args.config_out)
    except ConfigError as exc:
        print_config_error(exc)
        return 2
    if report.next_steps:
        out.print("next:")
        for step in report.next_steps:
            out.print(f"  • {step}")
    return 0
