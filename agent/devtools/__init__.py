"""Tools for the demo, the tests and the benchmarks, shipped so that field testers have them too:
a local broker (``localbroker``), a throwaway CA (``pki``), the whole system on one machine
(``demo``), the agent as a child process on a provisioned temporary gateway (``harness``), the
same on the shipped defaults (``shipped``), a collecting MQTT subscriber (``subscriber``), a
nats-server cluster (``nats``), in-memory buffers and records for the publisher
(``memory_buffer``) and a buffer writer to kill -9 (``crash_writer``).

Never imported by the daemon (the import contract in ``make lint`` checks it).
"""
