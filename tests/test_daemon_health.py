"""The daemon's own pieces: what `heatgate run` imports, the parts' wiring without an import cycle,
sources from the factory table, and records a full disk refuses. The health rules themselves are
tested on agent/health.py (tests/test_health.py)."""

from __future__ import annotations

import ast
import asyncio
import subprocess
import sys
import typing
from collections.abc import Sequence
from pathlib import Path

from heatgate.agent import assembly
from heatgate.agent.config import SourceConfig, load_config
from heatgate.agent.daemon import Committer
from heatgate.agent.health import HealthSnapshot, problems
from heatgate.buffer.api import NewRecord
from heatgate.buffer.errors import RecordsNotStored
from heatgate.config import data_path

AGENT_DIR = Path(assembly.__file__).resolve().parent
DAEMON_PATH = ("daemon", "assembly", "command_wiring", "health", "status")
"""The modules of `heatgate run` below the CLI (agent/<name>.py)."""


def _run_probe(probe: str) -> list[str]:
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.split()


def test_the_daemon_loads_neither_the_installer_tools_nor_rich(tmp_path: object) -> None:
    """`heatgate run` imports only its own command module, and keeps rich out (resident memory)."""
    probe = (
        "import sys\n"
        "from heatgate.agent.cli import main\n"
        "code = main(['run', '--config', '/nonexistent/heatgate.toml'])\n"
        "rich = sys.modules.get('rich')\n"
        "cli = 'heatgate.agent.cli.'\n"
        "print(code, rich is not None, cli + 'privacy' in sys.modules, cli + 'tail' in sys.modules)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.split() == ["2", "False", "False", "False"], result.stdout + result.stderr
    assert "file not found" in result.stderr


def test_the_daemon_imports_a_driver_only_for_a_source_of_its_type() -> None:
    """pymodbus only with a Modbus source, dsmr-parser only with a P1 meter, no simulator ever."""
    probe = (
        "import asyncio, sys\n"
        "from heatgate.agent import daemon\n"
        "from heatgate.agent.assembly import build_source\n"
        "from heatgate.agent.config import load_config\n"
        "from heatgate.config import data_path\n"
        "def loaded():\n"
        "    names = ('pymodbus', 'dsmr_parser', 'heatgate.drivers.sim', 'heatgate.agent.devtools')\n"
        "    return ','.join(n for n in names if n in sys.modules) or '-'\n"
        "sources = {s.name: s for s in load_config(data_path('heatgate.example.toml')).config.sources}\n"
        "by_type = {type(s).__name__: s for s in sources.values()}\n"
        "print(loaded())\n"
        "built = build_source(by_type['P1Source'])\n"
        "print(built.type, loaded())\n"
        "async def modbus():\n"  # pymodbus clients are made on a running loop
        "    return build_source(by_type['ModbusTcpSource'])\n"
        "built = asyncio.run(modbus())\n"
        "print(built.type, loaded(), sorted(built.writable) == [d.name for d in by_type['ModbusTcpSource'].devices])\n"
    )
    assert _run_probe(probe) == ["-", "p1", "dsmr_parser", "modbus-tcp", "pymodbus,dsmr_parser", "True"]


def test_every_source_type_of_the_config_has_a_factory() -> None:
    types = {str(cls.__struct_config__.tag) for cls in typing.get_args(SourceConfig)}
    assert types == set(assembly.SOURCE_FACTORIES)
    for source in load_config(data_path("heatgate.example.toml")).config.sources:
        assert assembly.source_type(source) in assembly.SOURCE_FACTORIES


def _imports(tree: ast.AST) -> list[tuple[str, int]]:
    """(module imported, line) of every import in ``tree``, TYPE_CHECKING ones included."""
    found: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.extend([(node.module, node.lineno)] + [(f"{node.module}.{a.name}", node.lineno) for a in node.names])
    return found


def _function_level_imports(tree: ast.Module) -> list[tuple[str, str]]:
    """(function, module) of each import inside a function body."""
    found: list[tuple[str, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.module:
                    found.append((node.name, inner.module))
                elif isinstance(inner, ast.Import):
                    found.extend((node.name, alias.name) for alias in inner.names)
    return found


def test_the_daemon_path_has_no_import_cycle_and_defers_only_the_drivers() -> None:
    trees = {name: ast.parse((AGENT_DIR / f"{name}.py").read_text()) for name in DAEMON_PATH}
    # Nothing below the daemon imports it, not even for type checking; command wiring is given
    # its parts and knows neither the daemon nor the assembly.
    for name in DAEMON_PATH[1:]:
        imported = [module for module, _ in _imports(trees[name])]
        assert "heatgate.agent.daemon" not in imported, name
    wiring_imports = [module for module, _ in _imports(trees["command_wiring"])]
    assert not any(m.startswith("heatgate.agent.assembly") for m in wiring_imports)
    # The only deferred imports: each source factory imports its own driver.
    factories = {"_modbus": "heatgate.drivers.modbus.source", "_p1": "heatgate.drivers.p1.source"}
    factories["_zwave"] = "heatgate.drivers.zwave.source"
    factories["_zwavejs"] = "heatgate.drivers.zwavejs.source"
    deferred = [
        (name, function, module) for name in DAEMON_PATH for function, module in _function_level_imports(trees[name])
    ]
    assert sorted(deferred) == sorted(("assembly", function, module) for function, module in factories.items())


def _record(n: int) -> NewRecord:
    return NewRecord(
        id=f"01M8000000000000000000000{n}",
        stream="service",
        route="service/fault",
        priority=0,
        created_s=1.0,
        payload=b"{}",
    )


class FullThenFreeDisk:
    def __init__(self) -> None:
        self.stored: list[str] = []
        self.full = True

    async def put(self, records: Sequence[NewRecord]) -> None:
        if self.full:
            raise RecordsNotStored(frozenset(r.id for r in records), {"service": len(records)})
        self.stored.extend(r.id for r in records)


def test_records_a_full_disk_refuses_are_kept_and_offered_again() -> None:
    """The buffer refuses service records (disk full, nothing evictable): the committer keeps them
    in memory (a problem, by the health rules) and stores them with the next batch once there is
    room."""
    committer = Committer()
    disk = FullThenFreeDisk()
    asyncio.run(committer.commit(disk, [_record(1), _record(2)]))
    assert disk.stored == []
    snapshot = HealthSnapshot(now_s=0.0, unstored=len(committer.waiting), unstored_dropped=committer.dropped)
    assert problems(snapshot) == ["disk full: 2 record(s) waiting in memory, 0 lost"]
    disk.full = False
    asyncio.run(committer.commit(disk, [_record(3)]))
    assert disk.stored == [_record(1).id, _record(2).id, _record(3).id]
    assert committer.waiting == [] and committer.dropped == 0


def test_a_full_disk_keeps_at_most_its_limit_and_counts_the_oldest_it_drops() -> None:
    committer = Committer(max_waiting=2)
    disk = FullThenFreeDisk()
    asyncio.run(committer.commit(disk, [_record(1), _record(2), _record(3)]))
    assert [r.id for r in committer.waiting] == [_record(2).id, _record(3).id]
    assert committer.dropped == 1
    asyncio.run(committer.commit(disk, [_record(4)]))
    assert [r.id for r in committer.waiting] == [_record(3).id, _record(4).id]
    assert committer.dropped == 2


def test_every_write_a_driver_makes_on_its_own_is_audited_once_without_its_values() -> None:
    from heatgate.agent.daemon import device_write_audits
    from heatgate.drivers.reading import DeviceWrite
    from tests.support.privacy import bodies, make_pipeline

    class Unlocking:
        def __init__(self) -> None:
            self.pending = [
                DeviceWrite("bus", "hp1", "holding", 4000, 1, 0.0),
                DeviceWrite("bus", "hp1", "holding", 4001, 2, 0.0, error="exception 2"),
            ]

        def take_writes(self) -> list[DeviceWrite]:
            writes, self.pending = self.pending, []
            return writes

    class Plain:  # a source that makes no writes of its own
        pass

    pipeline = make_pipeline()
    source = Unlocking()
    records = device_write_audits([Plain(), source], pipeline)  # type: ignore[list-item]
    audits = bodies(records, "security")
    assert [(a["event"], a["outcome"], a["details"]["address"]) for a in audits] == [
        ("device.init_write", "done", 4000),
        ("device.init_write", "failed", 4001),
    ]
    assert audits[1]["reason"] == "device refused the write" and "exception 2" not in str(audits)
    assert device_write_audits([source], pipeline) == []  # type: ignore[list-item]  # each write once
