"""``heatgate cmd sign|approve|send``: build, sign and publish command envelopes (backend side).

``send`` talks to the broker with paho directly (MQTT 5): it subscribes to
``<prefix>/<gw>/cmd/response``, publishes the envelope on ``<prefix>/<gw>/cmd/<name>`` with that
response topic and fresh correlation data, and prints the matching response.
"""

from __future__ import annotations

import argparse
import json
import secrets
import ssl
import sys
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import msgspec

from heatgate.agent.cli import EXIT_FAILURE, EXIT_OK, EXIT_USAGE
from heatgate.agent.commands.dispatch import SEALED_FORMAT, Response, decode_response
from heatgate.agent.commands.envelope import (
    Approval,
    Envelope,
    b64url_decode,
    b64url_encode,
    decode_envelope,
    encode_envelope,
)
from heatgate.agent.commands.keys import CommandKeyFileError, load_x25519_public, raw_public
from heatgate.agent.commands.private_keys import load_ed25519_private, load_x25519_private
from heatgate.agent.commands.seal import SealError, open_sealed
from heatgate.agent.commands.sign import sign_approval, sign_envelope
from heatgate.errors import HeatgateError

EXAMPLES = """\
examples:
  heatgate cmd sign --key keys/command.key --target gw-0001 --command privacy.object --arg stream=analytics
  heatgate cmd approve --key keys/approval.key --operator op-42 --target gw-0001 \\
      --device heatpump --point flow_setpoint_c --value 45 > approval.json
  heatgate cmd send --url mqtts://broker:8883 --ca ca.pem --cert backend.pem --key backend.key \\
      --target gw-0001 --sign-key keys/command.key --command device.write \\
      --arg device=heatpump --arg point=flow_setpoint_c --arg value=45 --approval approval.json
"""


class _UsageError(HeatgateError):
    """The options do not make a command; the message says which."""


def register(subparsers: Any) -> None:
    cmd = subparsers.add_parser(
        "cmd",
        help="sign and send commands to a gateway (backend side)",
        description="Build, sign and publish command envelopes.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = cmd.add_subparsers(dest="cmd_action", metavar="ACTION", required=True, parser_class=type(cmd))

    sign = sub.add_parser("sign", help="print a signed envelope (JSON)")
    sign.add_argument("--key", type=Path, required=True, metavar="PRIV", help="the command key (Ed25519 PEM)")
    _add_envelope_options(sign, required=True)
    sign.set_defaults(handler=run_sign)

    approve = sub.add_parser("approve", help="print an operator's signed approval of one write (JSON)")
    approve.add_argument("--key", type=Path, required=True, metavar="PRIV", help="the approval key (Ed25519 PEM)")
    approve.add_argument("--operator", required=True, metavar="ID")
    approve.add_argument("--target", required=True, metavar="GW")
    approve.add_argument("--device", required=True)
    approve.add_argument("--point", required=True)
    approve.add_argument("--value", required=True, type=_number)
    approve.add_argument("--ttl-s", type=int, default=300)
    approve.set_defaults(handler=run_approve)

    send = sub.add_parser("send", help="publish an envelope and print the gateway's response")
    send.add_argument("--url", required=True, help="mqtts://host:port (mqtt:// for a loopback broker)")
    send.add_argument("--ca", type=Path, help="CA file for the broker's certificate")
    send.add_argument("--cert", type=Path, help="client certificate (mutual TLS)")
    send.add_argument("--key", dest="tls_key", type=Path, help="client certificate's private key")
    send.add_argument("--prefix", default="heatgate/v1", help="topic prefix (default: heatgate/v1)")
    send.add_argument("--envelope", type=Path, metavar="FILE", help="a signed envelope ('-' for stdin)")
    send.add_argument("--sign-key", type=Path, metavar="PRIV", help="sign here with this command key")
    _add_envelope_options(send, required=False)
    send.add_argument("--wait-s", type=float, default=10.0, help="how long to wait for the response")
    send.add_argument(
        "--decrypt-key",
        type=Path,
        metavar="PRIV",
        help="recipient key (X25519) to open a sealed export in the response",
    )
    send.set_defaults(handler=run_send)


def _add_envelope_options(parser: argparse.ArgumentParser, *, required: bool) -> None:
    parser.add_argument("--target", required=True, metavar="GW", help="gateway id")
    parser.add_argument(
        "--command",
        dest="cmd_name",
        required=required,
        metavar="NAME",
        help="ping, status, privacy.object, ..., device.write",
    )
    parser.add_argument(
        "--arg",
        action="append",
        default=[],
        metavar="K=V",
        help="an argument; V is read as JSON if it parses (45, true), else as a string",
    )
    parser.add_argument(
        "--recipient", type=Path, metavar="PUB", help="privacy.export: the recipient's X25519 public key file"
    )
    parser.add_argument("--ttl-s", type=int, default=300, help="validity in seconds (default: 300)")
    parser.add_argument("--approval", type=Path, metavar="FILE", help="device.write: an approval from 'cmd approve'")
    parser.add_argument(
        "--approval-key",
        type=Path,
        metavar="PRIV",
        help="device.write: approve here with this operator key (with --operator)",
    )
    parser.add_argument("--operator", metavar="ID", help="operator id for --approval-key")


def _number(text: str) -> int | float:
    try:
        return int(text)
    except ValueError:
        return float(text)


def parse_arg(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise _UsageError(f"--arg {text!r}: expected KEY=VALUE")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def build_envelope(args: argparse.Namespace, key_path: Path) -> Envelope:
    """The signed envelope the options describe. Raises _UsageError, CommandKeyFileError."""
    if not args.cmd_name:
        raise _UsageError("--command is required to sign")
    cmd_args = dict(parse_arg(a) for a in args.arg)
    if args.recipient is not None:
        cmd_args["recipient"] = b64url_encode(raw_public(load_x25519_public(args.recipient)))
    approval: Approval | None = None
    if args.approval is not None:
        try:
            approval = msgspec.json.decode(args.approval.read_bytes(), type=Approval)
        except (OSError, msgspec.MsgspecError) as exc:
            raise _UsageError(f"--approval {args.approval}: {exc}") from None
    elif args.approval_key is not None:
        if not args.operator:
            raise _UsageError("--approval-key needs --operator")
        try:
            device, point, value = cmd_args["device"], cmd_args["point"], cmd_args["value"]
        except KeyError as exc:
            raise _UsageError(f"--approval-key needs --arg {exc.args[0]}=...") from None
        approval = sign_approval(
            load_ed25519_private(args.approval_key),
            operator=args.operator,
            target=args.target,
            device=device,
            point=point,
            value=value,
            ttl_s=args.ttl_s,
        )
    return sign_envelope(
        load_ed25519_private(key_path),
        target=args.target,
        command=args.cmd_name,
        args=cmd_args,
        ttl_s=args.ttl_s,
        approval=approval,
    )


def run_sign(args: argparse.Namespace) -> int:
    try:
        envelope = build_envelope(args, args.key)
    except (_UsageError, CommandKeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(encode_envelope(envelope).decode() + "\n")
    return EXIT_OK


def run_approve(args: argparse.Namespace) -> int:
    try:
        approval = sign_approval(
            load_ed25519_private(args.key),
            operator=args.operator,
            target=args.target,
            device=args.device,
            point=args.point,
            value=args.value,
            ttl_s=args.ttl_s,
        )
    except CommandKeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(msgspec.json.encode(approval, order="sorted").decode() + "\n")
    return EXIT_OK


def _load_envelope(args: argparse.Namespace) -> bytes:
    if args.envelope is not None:
        if args.sign_key is not None:
            raise _UsageError("give --envelope or --sign-key, not both")
        try:
            raw = sys.stdin.buffer.read() if str(args.envelope) == "-" else args.envelope.read_bytes()
        except OSError as exc:
            raise _UsageError(f"--envelope {args.envelope}: {exc.strerror or exc}") from None
        return raw.strip()
    if args.sign_key is None:
        raise _UsageError("give --envelope FILE, or --sign-key with --command")
    return encode_envelope(build_envelope(args, args.sign_key))


def run_send(args: argparse.Namespace) -> int:
    try:
        raw = _load_envelope(args)
        envelope = decode_envelope(raw)
        decrypt_key = load_x25519_private(args.decrypt_key) if args.decrypt_key is not None else None
        endpoint = _endpoint(args)
    except (_UsageError, CommandKeyFileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except msgspec.MsgspecError as exc:
        print(f"error: the envelope is not valid: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if envelope.target != args.target:
        print(f"error: the envelope is for {envelope.target!r}, not --target {args.target!r}", file=sys.stderr)
        return EXIT_USAGE
    topic = f"{args.prefix}/{args.target}/cmd/{envelope.command}"
    response_topic = f"{args.prefix}/{args.target}/cmd/response"
    try:
        response = exchange(endpoint, topic, response_topic, raw, wait_s=args.wait_s)
    except SendError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    document = msgspec.to_builtins(response)
    if decrypt_key is not None and response.result.get("format") == SEALED_FORMAT:
        try:
            plain = open_sealed(decrypt_key, b64url_decode(str(response.result.get("sealed", ""))))
        except (SealError, ValueError) as exc:
            print(f"error: cannot open the sealed result: {exc}", file=sys.stderr)
            return EXIT_FAILURE
        document["result"] = {"opened": json.loads(plain)}
    print(json.dumps(document, indent=2, sort_keys=True))
    return EXIT_OK if response.outcome == "done" else EXIT_FAILURE


# ---- the MQTT exchange (paho, driven on this thread: no network thread is started) ---------


class SendError(HeatgateError):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Endpoint(msgspec.Struct, frozen=True, kw_only=True):
    host: str
    port: int
    tls: ssl.SSLContext | None


def _endpoint(args: argparse.Namespace) -> Endpoint:
    parts = urlsplit(args.url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise _UsageError(f"--url {args.url!r}: expected mqtts://host[:port] or mqtt://host[:port]")
    tls: ssl.SSLContext | None = None
    if parts.scheme == "mqtts":
        tls = ssl.create_default_context(cafile=str(args.ca) if args.ca else None)
        tls.minimum_version = ssl.TLSVersion.TLSv1_2
        if (args.cert is None) != (args.tls_key is None):
            raise _UsageError("give --cert and --key together")
        if args.cert is not None:
            tls.load_cert_chain(str(args.cert), str(args.tls_key))
    return Endpoint(host=parts.hostname, port=parts.port or (8883 if tls else 1883), tls=tls)


def exchange(endpoint: Endpoint, topic: str, response_topic: str, payload: bytes, *, wait_s: float) -> Response:
    """Publish ``payload`` (QoS 1) with a response topic and correlation data; return the
    matching response. Raises :class:`SendError`."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    correlation = secrets.token_bytes(16)
    state: dict[str, Any] = {"connected": None, "subscribed": False, "published": False, "response": None}

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        state["connected"] = not reason.is_failure
        if reason.is_failure:
            state["error"] = f"the broker refused the connection: {reason}"

    def on_subscribe(_c: Any, _u: Any, _m: Any, reasons: Any, _p: Any) -> None:
        state["subscribed"] = True
        if any(r.is_failure for r in reasons):
            state["error"] = f"subscription to {response_topic} refused: {reasons}"

    def on_publish(_c: Any, _u: Any, _m: Any, reason: Any, _p: Any) -> None:
        state["published"] = True
        if reason.is_failure:
            state["error"] = f"the broker refused the command: {reason}"

    def on_message(_c: Any, _u: Any, message: Any) -> None:
        props = message.properties
        if getattr(props, "CorrelationData", None) != correlation:
            return
        try:
            state["response"] = decode_response(message.payload)
        except msgspec.MsgspecError as exc:
            state["error"] = f"the response is not valid: {exc}"

    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"heatgate-cmd-{secrets.token_hex(4)}", protocol=mqtt.MQTTv5
    )
    if endpoint.tls is not None:
        client.tls_set_context(endpoint.tls)
    client.on_connect, client.on_subscribe = on_connect, on_subscribe
    client.on_publish, client.on_message = on_publish, on_message
    deadline = time.monotonic() + wait_s

    def pump(done: Any, what: str) -> None:
        while not done():
            if "error" in state:
                raise SendError(state["error"])
            if time.monotonic() > deadline:
                raise SendError(f"timed out after {wait_s:g} s waiting for {what}")
            rc = client.loop(timeout=0.1)
            if rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                raise SendError(f"connection lost while waiting for {what}: {mqtt.error_string(rc)}")
        if "error" in state:
            raise SendError(state["error"])

    try:
        try:
            client.connect(endpoint.host, endpoint.port, keepalive=30)
        except (OSError, ssl.SSLError) as exc:
            raise SendError(f"cannot connect to {endpoint.host}:{endpoint.port}: {exc}") from None
        pump(lambda: state["connected"] is not None, "the broker's CONNACK")
        client.subscribe(response_topic, qos=1)
        pump(lambda: state["subscribed"], "the subscription")
        properties = Properties(PacketTypes.PUBLISH)
        properties.ResponseTopic = response_topic
        properties.CorrelationData = correlation
        client.publish(topic, payload, qos=1, properties=properties)
        pump(lambda: state["published"], "the broker's PUBACK")
        pump(lambda: state["response"] is not None, "the gateway's response")
        response: Response = state["response"]
        return response
    finally:
        if client.is_connected():
            client.disconnect()
            client.loop(timeout=0.1)
