"""heatgate's benchmarks: scripts that print figures, each run as ``python -m bench.<name>`` from
the checkout (``make bench`` runs them all through ``bench.run_all``). They import heatgate and its
dev tools (``heatgate.agent.devtools``), never a test module."""
