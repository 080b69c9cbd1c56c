"""The peer comparison's heat pump: 50 holding registers (addresses 0..49, signed 16-bit, 0.1
units), described once and written out as a heatgate profile and as a ThingsBoard IoT
Gateway Modbus connector config, so both gateways read exactly the same registers.

The simulator is heatgate's own (drivers/modbus/sim.py) serving a SimDevice with this profile
and a slowly varying model; its SimContext counts every request.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any, cast

from heatgate.drivers.modbus.profile import load_profile
from heatgate.drivers.sim.modbus_model import FaultPlan, SimDevice

__all__ = ["POINTS", "HeatPump50Model", "heatpump50_device", "tb_connector_config", "write_profile"]

REGISTERS = 50
POINTS = [f"reg{i:02d}_c" for i in range(REGISTERS)]
SCALE = 0.1


def write_profile(path: Path) -> Path:
    lines = [
        'name = "bench-heatpump50"',
        'device_type = "heat-pump"',
        'vendor = "heatgate"',
        'model = "HG-BENCH-50"',
        'description = "Peer benchmark heat pump: 50 holding registers"',
        "",
    ]
    for address, name in enumerate(POINTS):
        lines += [
            "[[points]]",
            f'name = "{name}"',
            'table = "holding"',
            f"address = {address}",
            'type = "s16"',
            f"scale = {SCALE}",
            'unit = "°C"',
            "",
        ]
    path.write_text("\n".join(lines))
    return path


class HeatPump50Model:
    """Temperatures that drift slowly with a little noise, as sensors do."""

    def __init__(self, seed: int = 50) -> None:
        self.rng = random.Random(seed)

    def writable(self, name: str, value: float) -> bool:
        return False

    def values(self, now_s: float, fault_code: int) -> dict[str, float]:
        return {
            name: round(20.0 + 10.0 * math.sin(now_s / 600.0 + i) + self.rng.uniform(-0.2, 0.2), 1)
            for i, name in enumerate(POINTS)
        }


def heatpump50_device(profile_path: Path) -> SimDevice:
    return SimDevice(load_profile(str(profile_path)), cast(Any, HeatPump50Model()), FaultPlan())


def tb_connector_config(host: str, port: int, *, poll_period_ms: int = 1000) -> dict[str, Any]:
    """The ThingsBoard gateway's Modbus connector config (3.x format) for the same registers."""
    return {
        "master": {
            "slaves": [
                {
                    "host": host,
                    "port": port,
                    "type": "tcp",
                    "method": "socket",
                    "unitId": 1,
                    "deviceName": "heatpump-50",
                    "deviceType": "heat-pump",
                    "timeout": 35,
                    "byteOrder": "BIG",
                    "wordOrder": "BIG",
                    "retries": 3,
                    "retryOnEmpty": True,
                    "retryOnInvalid": True,
                    "pollPeriod": poll_period_ms,
                    "connectAttemptTimeMs": 5000,
                    "connectAttemptCount": 5,
                    "waitAfterFailedAttemptsMs": 300000,
                    "attributes": [],
                    "timeseries": [
                        {
                            "tag": name,
                            "type": "16int",
                            "functionCode": 3,
                            "objectsCount": 1,
                            "address": address,
                            "divider": int(1 / SCALE),
                        }
                        for address, name in enumerate(POINTS)
                    ],
                    "attributeUpdates": [],
                    "rpc": [],
                }
            ],
        },
    }


def dump(config: dict[str, Any], path: Path) -> None:
    path.write_text(json.dumps(config, indent=2))
