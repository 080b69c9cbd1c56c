"""Simulated devices for field testers, tests and the demo (``heatgate sim``).

Never imported by the agent's production paths (the import contract in ``make lint`` checks it).
"""
