"""Child process for the kill -9 tests and bench: puts records under load, forever.

Prints ``P <id>`` after each put returned (committed) and ``A <id>`` just before acking it.
Usage: python -m tests.buffer_support.writer DB KEYHEX COMMIT_INTERVAL_S
"""

from __future__ import annotations

import asyncio
import random
import sys
import time
from pathlib import Path

from heatgate.buffer.adapter import open_buffer
from heatgate.buffer.api import NewRecord
from heatgate.buffer.ids import new_id
from tests.buffer_support import PRIORITY, RETENTION_S, ROUTE


def payload_for(record_id: str) -> bytes:
    return f'{{"id":"{record_id}","v":{sum(map(ord, record_id))}}}'.encode().ljust(120, b" ")


async def main(db: Path, key: bytes, commit_interval_s: float) -> None:
    buffer = await open_buffer(
        db, key, cap_bytes=64 << 20, commit_interval_s=commit_interval_s, retention_s=RETENTION_S
    )
    out = sys.stdout
    rng = random.Random()

    async def producer(stream: str) -> None:
        while True:
            batch = [
                NewRecord(
                    id=(rid := new_id()),
                    stream=stream,
                    route=ROUTE[stream],
                    priority=PRIORITY[stream],
                    created_s=time.time(),
                    payload=payload_for(rid),
                )
                for _ in range(rng.randint(1, 50 if stream != "service" else 2))
            ]
            await buffer.put(batch)
            out.write("".join(f"P {r.id}\n" for r in batch))
            out.flush()

    async def publisher() -> None:
        while True:
            taken = await buffer.take(20)
            if not taken:
                await asyncio.sleep(0.01)
                continue
            half = len(taken) // 2
            # Announced before the ack: from here on the record may be gone (that is not a loss).
            out.write("".join(f"A {r.id}\n" for r in taken[:half]))
            out.flush()
            await buffer.ack([r.id for r in taken[:half]])
            await buffer.release([r.id for r in taken[half:]])

    async with asyncio.TaskGroup() as group:
        for stream in ("telemetry", "analytics", "service"):
            group.create_task(producer(stream), name=f"producer-{stream}")
        group.create_task(publisher(), name="publisher")


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), float(sys.argv[3])))
