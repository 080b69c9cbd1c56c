"""``heatgate sim``: run one simulated device, with fault injection.

Each simulator registers itself from its driver package (``drivers/<x>/sim.py`` exposes
``register_sim(subparsers)``); this module only gathers them under ``heatgate sim``.
"""

from __future__ import annotations

import argparse
import importlib

# Add a module here once its simulator works.
SIM_MODULES: tuple[str, ...] = (
    "heatgate.drivers.sim.p1",
    "heatgate.drivers.sim.zwave",
    "heatgate.drivers.sim.modbus",
)

DESCRIPTION = """\
Runs one simulated device so that the agent, the installer tools and the tests have something
real to talk to: Modbus servers (pymodbus) over TCP or RTU on a pseudo-terminal, a DSMR P1
meter and a Z-Wave controller on pseudo-terminals. Faults are injected on command.
Simulators bind to 127.0.0.1 unless told otherwise and run until interrupted (Ctrl-C).
"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run a simulated device (heat pump, meter, P1, Z-Wave) with fault injection",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    devices = parser.add_subparsers(dest="device", metavar="DEVICE", required=True)
    for module_name in SIM_MODULES:
        importlib.import_module(module_name).register_sim(devices)
