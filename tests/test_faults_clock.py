"""A wall clock that jumps back and forward (a gateway without RTC before NTP, an NTP step).

The agent takes wall time in two places that matter for data: record ids (time-ordered, the
backend de-duplicates by them) and the buffer (key epochs and retention). Both take an
injectable clock; this drives them together with one that jumps. The daemon's own loops use
monotonic time (asyncio) and are not affected.
"""

from __future__ import annotations

from pathlib import Path

from heatgate.agent.privacy.policy import load_policy
from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.ids import IdGenerator, id_time_s
from heatgate.config import data_path
from tests.support.buffer import T0, records
from tests.support.leaks import run_async

DAY_S = 86400.0
RETENTION_S = load_policy(data_path("privacy.toml")).retention_s()  # telemetry 90 d, connectivity 14 d


def test_clock_jumps_back_and_forward_lose_nothing_and_keep_ids_ordered(tmp_path: Path) -> None:
    now = [T0]
    ids = IdGenerator(lambda: now[0])
    made: list[str] = []

    async def main() -> None:
        buffer = await open_buffer(
            tmp_path / "b.db",
            b"k" * 32,
            cap_bytes=8 << 20,
            commit_interval_s=0,
            retention_s=RETENTION_S,
            clock=lambda: now[0],
        )
        try:

            async def put(stream: str, count: int) -> None:
                batch = records(stream, count, created_s=now[0], ids=ids)
                made.extend(r.id for r in batch)
                await buffer.put(batch)

            await put("telemetry", 10)
            await put("connectivity", 10)
            now[0] = T0 - 2 * 3600  # back two hours (RTC-less boot, then NTP steps back)
            await put("telemetry", 10)
            assert not any((await buffer.sweep()).values())
            now[0] = T0 + 20 * DAY_S  # forward 20 days: past connectivity's 14-day retention
            await put("telemetry", 10)
            removed = await buffer.sweep()
            now[0] = T0 + 60  # and back again
            await put("telemetry", 10)
            await put("service", 3)

            taken = await buffer.take(1000)
            stats = await buffer.stats()
            exported = await buffer.export_all()
        finally:
            await buffer.close()

        # Ids stay unique and in the order the records were made, whatever the clock did.
        assert len(set(made)) == len(made) and made == sorted(made)
        assert id_time_s(made[-1]) >= T0 + 20 * DAY_S  # never stepped back below an id already issued
        # The forward jump expired exactly what the policy says (counted, not silent); every
        # other record, including those made "in the future" and "in the past", is readable.
        assert removed.get("connectivity") == 10 and stats.streams["connectivity"].expired == 10
        telemetry = [r for r in taken if r.stream == "telemetry"]
        assert len(telemetry) == 40 and len([r for r in taken if r.stream == "service"]) == 3
        assert taken[0].stream == "service"  # faults first, whatever their timestamps
        assert all(s.auth_failures == 0 for s in stats.streams.values())
        assert {r.id for r in exported} == {r.id for r in taken}

    run_async(main())
