"""The tests' broker is the demo's (agent/localbroker.py): a real Mosquitto on a free loopback port."""

from heatgate.agent.devtools.localbroker import Broker, BrokerError, free_port, mosquitto_binary

__all__ = ["Broker", "BrokerError", "free_port", "mosquitto_binary"]
