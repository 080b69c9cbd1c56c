"""Modbus TCP and RTU: device profiles, pure register decoding, planned block reads, the
polling runners (one scheduler per bus) and the simulators (``heatgate sim heatpump|meter``).

Public entry points: :func:`drivers.modbus.profile.load_profile`,
:func:`drivers.modbus.source.make_modbus_source`, :mod:`drivers.modbus.sim`.
"""
