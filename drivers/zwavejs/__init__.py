"""Z-Wave through Z-Wave JS: a small client of the Z-Wave JS server's WebSocket API and the
``zwave-js`` source built on it (S2, SmartStart, multi-channel; the server runs the stack)."""
