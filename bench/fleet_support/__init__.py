"""The parts of ``bench.fleet``: simulated gateways per host process, and the backends that consume them."""
