"""heatgate's daemon: orchestration, the privacy pipeline, the MQTT publisher, commands, the CLI."""
