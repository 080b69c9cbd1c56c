"""Tools for the demo and for tests: a local broker, a throwaway CA, the whole system on one machine.

Never imported by the daemon (the import contract in ``make lint`` checks it).
"""
