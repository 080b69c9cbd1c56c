"""How many records a drain round takes: eight full messages' worth, unless the buffer hands
them out too slowly for a fault committed meanwhile to wait (``ROUND_TAKE_BUDGET_S``)."""

from __future__ import annotations

import pytest

from heatgate.agent.config import MqttConfig
from heatgate.agent.devtools.memory_buffer import MemoryBuffer
from heatgate.agent.publish.publisher import (
    ENVELOPE_BYTES_MAX,
    ROUND_MESSAGES,
    ROUND_RECORDS_MAX,
    ROUND_RECORDS_MIN,
    ROUND_TAKE_BUDGET_S,
    Publisher,
)
from heatgate.buffer.batch import BatchBuilder, TakenBatch


def _publisher(max_payload_bytes: int) -> Publisher:
    config = MqttConfig(url="mqtt://127.0.0.1:1883", max_payload_bytes=max_payload_bytes)
    return Publisher(config, "gw-test", MemoryBuffer(), version="test", health=dict)


def _batch(records: int, record_bytes: int) -> TakenBatch:
    builder = BatchBuilder()
    for n in range(records):
        builder.add(f"id-{n}", "telemetry", "telemetry", b"x" * (record_bytes - 1))  # + the comma
    return builder.build()


@pytest.mark.parametrize("max_payload_bytes", [16 * 1024, 64 * 1024])
def test_a_fast_buffer_gets_rounds_of_eight_full_messages(max_payload_bytes: int) -> None:
    publisher = _publisher(max_payload_bytes)
    publisher._size_rounds(_batch(512, 227), take_s=0.0002)
    per_message = (max_payload_bytes - ENVELOPE_BYTES_MAX) // 227
    assert publisher._round_records == max(ROUND_RECORDS_MIN, ROUND_MESSAGES * per_message)


def test_a_slow_buffer_keeps_rounds_that_a_fault_waits_little_for() -> None:
    publisher = _publisher(64 * 1024)
    publisher._size_rounds(_batch(512, 227), take_s=0.013)  # the real buffer's pace here
    assert publisher._round_records == ROUND_RECORDS_MIN
    publisher._size_rounds(_batch(512, 227), take_s=ROUND_TAKE_BUDGET_S / 2)  # 1,024 records fit the budget
    assert publisher._round_records == 1024


def test_rounds_stay_bounded_for_tiny_records() -> None:
    publisher = _publisher(64 * 1024)
    publisher._size_rounds(_batch(100, 20), take_s=0.0)
    assert publisher._round_records == ROUND_RECORDS_MAX
