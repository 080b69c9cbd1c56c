"""The Dutch smart meter's P1 port (DSMR 2.2 to 5): framer, telegram decoding, the source
runner (:class:`drivers.p1.source.P1Runner`) and a simulator (:mod:`drivers.p1.sim`)."""
