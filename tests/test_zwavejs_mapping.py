"""Z-Wave JS values to heatgate points (pure), and the zwave-js source's settings checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from heatgate.agent.config import load_config
from heatgate.drivers.reading import PointKind
from heatgate.drivers.zwavejs.mapping import CC, ValueKey, map_notification_event, map_value
from heatgate.drivers.zwavejs.messages import ValueMetadata
from heatgate.typedload import ConfigError


def _key(cc: int, prop: str | int, prop_key: str | int | None = None, endpoint: int = 0) -> ValueKey:
    return ValueKey(7, endpoint, cc, prop, prop_key)


def test_meter_export_is_energy_returned_and_a_counter() -> None:
    meta = ValueMetadata(unit="kWh", ccSpecific={"meterType": 1, "scale": 0, "rateType": 2})
    [point] = map_value(_key(CC.METER, "value", 0x10002), 5.5, meta)
    assert (point.point, point.kind, point.value, point.unit) == ("energy_returned_kwh", PointKind.COUNTER, 5.5, "kWh")


def test_meter_power_is_a_measurement_and_reset_buttons_are_nothing() -> None:
    power = ValueMetadata(unit="W", ccSpecific={"meterType": 1, "scale": 2, "rateType": 1})
    [point] = map_value(_key(CC.METER, "value", 66049), 1200, power)
    assert (point.point, point.kind) == ("power_w", PointKind.MEASUREMENT)
    assert map_value(_key(CC.METER, "reset", 66049), True, None) == []


def test_endpoint_prefix_and_unknown_sensor_type_still_named() -> None:
    meta = ValueMetadata(unit="°C", ccSpecific={"sensorType": 1, "scale": 0})
    [point] = map_value(_key(CC.MULTILEVEL_SENSOR, "Air temperature", endpoint=3), 20.5, meta)
    assert point.point == "ep3_air_temperature_c"
    [odd] = map_value(_key(CC.MULTILEVEL_SENSOR, "Soil humidity"), 40, ValueMetadata(ccSpecific={"sensorType": 41}))
    assert odd.point == "sensor_soil_humidity"


def test_notifications_alarms_are_faults_tamper_too_motion_is_status() -> None:
    smoke = ValueMetadata(states={"2": "Smoke detected"}, ccSpecific={"notificationType": 1})
    [alarm] = map_value(_key(CC.NOTIFICATION, "Smoke Alarm", "Sensor status"), 2, smoke)
    assert (alarm.point, alarm.kind, alarm.value, alarm.text) == ("smoke_alarm", PointKind.FAULT, 2, "Smoke detected")
    [idle] = map_value(_key(CC.NOTIFICATION, "Smoke Alarm", "Sensor status"), 0, smoke)
    assert (idle.value, idle.text) == (0, "idle")
    security = ValueMetadata(ccSpecific={"notificationType": 7})
    [tamper] = map_value(_key(CC.NOTIFICATION, "Home Security", "Cover status"), 3, security)
    assert (tamper.point, tamper.kind) == ("tamper", PointKind.FAULT)
    [motion] = map_value(_key(CC.NOTIFICATION, "Home Security", "Motion sensor status"), 8, security)
    assert (motion.point, motion.kind) == ("home_security_motion_sensor_status", PointKind.STATUS)
    assert map_value(_key(CC.NOTIFICATION, "alarmType"), 4, None) == []
    heat = map_notification_event(0, 4, 2, "Overheat detected")
    assert (heat.point, heat.kind, heat.text) == ("heat_alarm", PointKind.FAULT, "Overheat detected")


def test_switch_states_and_battery() -> None:
    [switch] = map_value(_key(CC.BINARY_SWITCH, "currentValue"), False, None)
    assert (switch.point, switch.kind, switch.value) == ("switch", PointKind.STATUS, 0)
    [level] = map_value(_key(CC.MULTILEVEL_SWITCH, "currentValue"), 99, None)
    assert (level.point, level.value) == ("level_pct", 99)
    assert map_value(_key(CC.BINARY_SWITCH, "targetValue"), True, None) == []
    [battery] = map_value(_key(CC.BATTERY, "level"), 80, None)
    assert (battery.point, battery.unit) == ("battery_pct", "%")


@pytest.mark.parametrize(
    ("url", "message"),
    [("ws://192.168.1.5:3000", "not loopback"), ("http://127.0.0.1:3000", "not a ws://"), ("ws://[::1]:3000", None)],
)
def test_source_url_must_be_ws_on_loopback(tmp_path: Path, url: str, message: str | None) -> None:
    config = tmp_path / "heatgate.toml"
    config.write_text(
        f"""
[gateway]
id = "gw-test-0001"
region = "3511 AB"
state_dir = "{tmp_path}"

[mqtt]
url = "mqtt://127.0.0.1:1883"

[[sources]]
type = "zwave-js"
name = "zw"
url = "{url}"
nodes = [{{ node_id = 2, name = "a" }}, {{ node_id = 2, name = "b" }}]
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    rendered = caught.value.render()
    assert "sources[0].nodes[1].node_id: duplicate node id 2" in rendered
    if message is None:
        assert "sources[0].url" not in rendered
    else:
        assert "sources[0].url" in rendered and message in rendered
