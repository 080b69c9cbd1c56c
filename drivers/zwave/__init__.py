"""Z-Wave over the Serial API (host side): framer, command-class decoders, the host state
machine, the source runner (:class:`drivers.zwave.source.ZwaveRunner`) and a simulated
controller (:mod:`drivers.zwave.sim`)."""
