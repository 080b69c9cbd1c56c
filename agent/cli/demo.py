"""``heatgate demo``: the whole system on this machine, and the backend's live view of it."""

from __future__ import annotations

import argparse
import contextlib
import signal
import subprocess
from pathlib import Path
from types import FrameType

from heatgate.agent.cli.console import error_console
from heatgate.agent.devtools.demo import DemoError, running_demo

DESCRIPTION = """\
Runs the whole system on this machine, each part as its own process, exactly as in the field:
  • Mosquitto on a free loopback port, mutual TLS with a throw-away CA;
  • a heat pump (Modbus TCP) that raises fault code 3 after a few seconds,
    an energy meter (Modbus RTU on a pseudo-terminal), a DSMR 5 smart meter (P1) and a
    Z-Wave controller with a multisensor, an energy switch and a secure node;
  • a gateway provisioned into a temporary state directory (keys, certificate, config);
  • the agent (`heatgate run`);
  • `heatgate tail`, the backend's view: every message validated against its schema,
    de-duplicated by record id.
The demo's privacy policy is the shipped one with aggregation windows of seconds instead of
minutes, hours and days, so that telemetry and analytics appear while you watch.
Everything is stopped and removed at the end (after --duration-s, or on Ctrl-C).
Needs Mosquitto (apt-get install mosquitto).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run simulated devices, a local broker, the agent and the backend's live view",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration-s", type=float, default=None, help="stop after this many seconds")
    parser.add_argument("--json", action="store_true", help="show the backend's view as JSON lines")
    parser.add_argument("--dir", type=Path, help="keep everything in this directory (default: a temporary one)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    console = error_console(soft_wrap=True)
    stop = {"requested": False}

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop["requested"] = True
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_signal)
    try:
        with console.status("starting the broker, the simulators and the agent…"):
            context = running_demo(args.dir)
            demo = context.__enter__()
        try:
            assert demo.broker is not None
            console.print(f"[bold]heatgate demo[/] in {demo.root}")
            console.print(f"  broker      {demo.broker.url} (mutual TLS)")
            console.print(f"  heat pump   Modbus TCP 127.0.0.1:{demo.heatpump_port}, fault 3 at {demo.fault_at_s} s")
            console.print(f"  meter       Modbus RTU {demo.sim_dir / 'meter'}")
            console.print(f"  smart meter P1 {demo.sim_dir / 'p1'};  Z-Wave {demo.sim_dir / 'zwave'}")
            console.print(f"  agent       heatgate run --config {demo.config_path}  (log: {demo.root / 'agent.log'})")
            console.print("  backend     heatgate tail --fleet  (Ctrl-C to stop)\n")
            tail = subprocess.Popen(demo.tail_command(json_lines=args.json, duration_s=args.duration_s))
            agent = demo.processes["agent"]
            try:
                while tail.poll() is None:
                    if agent.poll() is not None:
                        tail.terminate()
                        tail.wait(timeout=10)
                        log = (demo.root / "agent.log").read_text(errors="replace").splitlines()[-15:]
                        raise DemoError(f"the agent exited with status {agent.returncode}:\n" + "\n".join(log))
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        tail.wait(timeout=0.5)
            except KeyboardInterrupt:
                tail.terminate()
                tail.wait(timeout=10)
        finally:
            with console.status("stopping everything…"):
                context.__exit__(None, None, None)
        console.print("demo stopped; nothing left running")
        return 0
    except DemoError as exc:
        console.print(f"[bold red]error[/]: {exc}")
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, previous)
