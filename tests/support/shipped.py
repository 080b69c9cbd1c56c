"""The product as it ships (example config, shipped policy, the simulators it is written for):
moved to :mod:`heatgate.agent.devtools.shipped` (the soak benchmark uses it too); re-exported for
the acceptance tests."""

from heatgate.agent.devtools.shipped import (
    Backend,
    PublishedRecord,
    ShippedGateway,
    ShippedRig,
    ShippedSims,
    broker_connection_lines,
    broker_connections,
    committed_log,
    derive_config,
    example_settings,
    install_commit_log,
    to_toml,
)

__all__ = [
    "Backend",
    "PublishedRecord",
    "ShippedGateway",
    "ShippedRig",
    "ShippedSims",
    "broker_connection_lines",
    "broker_connections",
    "committed_log",
    "derive_config",
    "example_settings",
    "install_commit_log",
    "to_toml",
]
