"""Logs: JSON lines off a terminal; secrets and identifiers never in a line."""

from __future__ import annotations

import io
import json

import structlog

from heatgate import logs


def _capture(**event: object) -> dict[str, object]:
    stream = io.StringIO()
    logs.configure(level="debug", stream=stream, json=True)
    try:
        structlog.get_logger("t").info("event", **event)
    finally:
        structlog.reset_defaults()
    line = stream.getvalue().strip()
    return json.loads(line)


def test_json_line_with_level_and_time() -> None:
    record = _capture(count=3)
    assert record["event"] == "event"
    assert record["level"] == "info"
    assert str(record["timestamp"]).endswith("Z")
    assert record["count"] == 3


def test_sensitive_keys_redacted() -> None:
    record = _capture(
        master_key="0f" * 32,
        password="hunter2",
        serial_number="SN-12345",
        equipment_id="4530303331303033",
        home_id=0xC0FFEE01,
        mac="aa:bb:cc:dd:ee:ff",
        key_file="/var/lib/heatgate/keys/master.key",
        retry_count=2,
    )
    for key in ("master_key", "password", "serial_number", "equipment_id", "home_id", "mac"):
        assert record[key] == logs.REDACTED, key
    assert record["key_file"] == "/var/lib/heatgate/keys/master.key"
    assert record["retry_count"] == 2


def test_key_material_in_free_text_redacted() -> None:
    secret = "a1b2c3d4" * 8
    record = _capture(detail=f"loaded {secret} ok", blob=b"\x00\x01", nested={"token": "abc"})
    assert secret not in json.dumps(record)
    assert record["blob"] == logs.REDACTED
    assert record["nested"] == {"token": logs.REDACTED}


def test_level_filter() -> None:
    stream = io.StringIO()
    logs.configure(level="warning", stream=stream, json=True)
    try:
        structlog.get_logger("t").info("hidden")
        structlog.get_logger("t").warning("shown")
    finally:
        structlog.reset_defaults()
    assert "hidden" not in stream.getvalue()
    assert "shown" in stream.getvalue()


def test_paths_are_not_mistaken_for_key_material() -> None:
    import base64

    path = "/tmp/pytest-of-root/pytest-12/test_unplug_and_replug0/sim/p1-link"
    key_b64 = base64.b64encode(bytes(range(200, 232))).decode()  # contains '/' and '+'
    record = _capture(port_path=path, detail=f"key {key_b64}")
    assert record["port_path"] == path
    assert key_b64 not in json.dumps(record)


def test_each_line_names_its_logger() -> None:
    area = logs.get_logger("heatgate.publish")  # created before configure(), as a module's logger is
    stream = io.StringIO()
    logs.configure(level="info", stream=stream, json=True)
    try:
        area.warning("publish.connection_lost", error="timeout")
        logs.get_logger("heatgate.p1").info("p1.port_open")
        structlog.get_logger().info("unnamed")
    finally:
        structlog.reset_defaults()
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(r["event"], r.get("logger")) for r in lines] == [
        ("publish.connection_lost", "heatgate.publish"),
        ("p1.port_open", "heatgate.p1"),
        ("unnamed", None),
    ]
