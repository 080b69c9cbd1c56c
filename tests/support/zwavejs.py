"""The tests' Z-Wave network is the devtools' (agent/devtools/zwavejs_mock.py): Z-Wave JS's mock
controller behind a real Z-Wave JS server, both on free loopback ports."""

from heatgate.agent.devtools.zwavejs_mock import NETWORK_KEYS, MockNetwork, node_missing_reason, smartstart_qr

__all__ = ["NETWORK_KEYS", "MockNetwork", "node_missing_reason", "smartstart_qr"]
