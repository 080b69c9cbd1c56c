"""The in-memory buffer and the records for the publisher's tests: moved to
:mod:`heatgate.agent.devtools.memory_buffer` (the publish benchmark uses them too); re-exported
for the tests."""

from heatgate.agent.devtools.memory_buffer import (
    MemoryBuffer,
    analytics_record,
    fault_record,
    open_real_buffer,
    telemetry_record,
)

__all__ = ["MemoryBuffer", "analytics_record", "fault_record", "open_real_buffer", "telemetry_record"]
