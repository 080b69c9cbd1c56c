"""A real nats-server, alone or as a cluster: moved to :mod:`heatgate.agent.devtools.nats` (the
fleet benchmark uses it too); re-exported for the tests."""

from heatgate.agent.devtools.nats import NatsCluster, NatsError, NatsNode, nats_binary, nats_cluster, nats_server

__all__ = ["NatsCluster", "NatsError", "NatsNode", "nats_binary", "nats_cluster", "nats_server"]
