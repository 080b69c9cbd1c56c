"""Sources: Modbus (TCP and RTU), DSMR P1, Z-Wave Serial API, and their simulators."""
