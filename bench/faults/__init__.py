"""Fault benchmarks: kill -9 under load (``bench.faults.kill9``), a broker outage (``bench.faults.outage``)."""
