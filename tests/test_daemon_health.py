"""The daemon's own health rules (what `heatgate status` and systemd's STATUS= say)."""

from __future__ import annotations

import pytest

from heatgate.agent import daemon
from heatgate.agent.config import load_config
from heatgate.config import data_path


def test_a_broker_that_stops_acknowledging_is_a_problem_and_a_quiet_spell_is_not() -> None:
    agent = daemon.Agent(load_config(data_path("heatgate.example.toml")))
    stall = agent._acknowledgement_stall_s
    # A quiet spell of 10 minutes, then a message sent 0.2 s ago: waiting, not stalled.
    assert stall({"connected": True, "inflight": 1, "oldest_unacked_age_s": 0.2, "since_last_ack_s": 600.0}) is None
    assert stall({"connected": True, "inflight": 0, "oldest_unacked_age_s": None, "since_last_ack_s": 600.0}) is None
    # The oldest message has waited past the limit: stalled by its age.
    assert stall({"inflight": 3, "oldest_unacked_age_s": daemon.ACK_STALL_S + 1, "since_last_ack_s": 900.0}) == (
        daemon.ACK_STALL_S + 1
    )
    # The publisher dropped the connection for a missing PUBACK and has reconnected (ages restart):
    # still stalled, for as long as no PUBACK has come.
    dropped = {"inflight": 3, "oldest_unacked_age_s": 1.0, "since_last_ack_s": 95.0, "puback_timeouts_in_row": 2}
    assert stall(dropped) == 95.0
    assert stall({**dropped, "puback_timeouts_in_row": 0}) is None  # a PUBACK came


def test_the_daemon_loads_neither_the_installer_tools_nor_rich(tmp_path: object) -> None:
    """`heatgate run` imports only its own command module, and keeps rich out (resident memory)."""
    import subprocess
    import sys

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


def test_records_a_full_disk_refuses_are_kept_and_offered_again() -> None:
    """The buffer refuses service records (disk full, nothing evictable): the daemon keeps them in
    memory, says so in its problems, and stores them with the next batch once there is room."""
    import asyncio

    from heatgate.buffer.api import NewRecord
    from heatgate.buffer.errors import RecordsNotStored

    def record(n: int) -> NewRecord:
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

        async def put(self, records: list[NewRecord]) -> None:
            if self.full:
                raise RecordsNotStored(frozenset(r.id for r in records), {"service": len(records)})
            self.stored.extend(r.id for r in records)

    agent = daemon.Agent(load_config(data_path("heatgate.example.toml")))
    disk = FullThenFreeDisk()
    agent.buffer = disk
    asyncio.run(agent._store([record(1), record(2)]))
    assert disk.stored == []
    assert any("2 record(s) waiting in memory" in p for p in agent.problems())
    disk.full = False
    asyncio.run(agent._store([record(3)]))
    assert disk.stored == [record(1).id, record(2).id, record(3).id]
    assert not any("disk full" in p for p in agent.problems())


def test_the_publishers_stray_message_counter_feeds_the_health_rules(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loop of messages on topics the gateway does not serve shows as a problem."""

    class Publisher:
        def __init__(self) -> None:
            self.stray_messages = 0

        def status(self) -> dict[str, object]:
            return {"connected": True, "published": 0, "inflight": 0}

    clock = [1000.0]
    monkeypatch.setattr(daemon.time, "monotonic", lambda: clock[0])
    agent = daemon.Agent(load_config(data_path("heatgate.example.toml")))
    agent._slots.clear()
    publisher = Publisher()
    agent.publisher = publisher
    assert agent.problems() == []
    for _ in range(10):  # one stray message a second for 10 s
        clock[0] += 1.0
        publisher.stray_messages += 1
        agent.problems()
    found = agent.problems()
    assert len(found) == 1 and found[0].startswith("60 stray message(s)/min"), found
