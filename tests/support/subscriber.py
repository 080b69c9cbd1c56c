"""The collecting MQTT subscriber: moved to :mod:`heatgate.agent.devtools.subscriber` (the
benchmarks use it too); re-exported for the tests."""

from heatgate.agent.devtools.subscriber import Received, Subscriber

__all__ = ["Received", "Subscriber"]
