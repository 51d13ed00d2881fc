"""The MQTT settings and the sans-IO topic, partition and downlink rules."""

from __future__ import annotations

import base64

import pytest
from click.testing import CliRunner

from collector.cli import main
from collector.core.mqtt import DEFAULT_TOPICS, Partition, TopicError, device_partition, downlink, parse_topic
from collector.service.config import load_config
from collector.service.mqtt_config import mqtt_settings, public_url


def settings(**kw):
    return mqtt_settings(load_config(None, env={}, overrides={"mqtt_url": "mqtt://127.0.0.1", **kw}))


def test_topics_of_both_network_servers():
    t = parse_topic("chirpstack", "application/17c8/device/70b3d57ed005a1b2/event/up")
    assert (t.application, t.device, t.event) == ("17c8", "70b3d57ed005a1b2", "up")
    assert parse_topic("chirpstack", "application/1/device/aa/event/join").event == "join"
    t = parse_topic("ttn", "v3/field-loggers@acme/devices/logger-0042/up")
    assert (t.application, t.device, t.event) == ("field-loggers@acme", "logger-0042", "up")
    for integration, topic in [("chirpstack", "application/1/device/aa/command/down"),
                               ("chirpstack", "application/1/gateway/aa/event/up"), ("ttn", "v3/a/devices"),
                               ("ttn", "v2/a/devices/b/up")]:
        with pytest.raises(TopicError):
            parse_topic(integration, topic)


def test_partitions_split_every_device_to_exactly_one_collector():
    assert Partition.parse("") == Partition(0, 1) and Partition.parse("1/3") == Partition(1, 3)
    for bad in ("2/2", "1", "a/b", "-1/2", "0/0"):
        with pytest.raises(ValueError, match="mqtt_partition"):
            Partition.parse(bad)
    devices = [f"70b3d57ed005{d:04x}" for d in range(300)]
    parts = [Partition(i, 3) for i in range(3)]
    owners = [[p.owns(d) for p in parts].count(True) for d in devices]
    assert owners == [1] * len(devices)
    sizes = [sum(p.owns(d) for d in devices) for p in parts]
    assert min(sizes) > 70  # spread, not all on one
    # the topic's case does not move a device (TTS device ids and DevEUIs in either case)
    assert device_partition("70B3D57ED005A1B2", 7) == device_partition("70b3d57ed005a1b2", 7)


def test_downlink_shapes():
    topic, body = downlink("chirpstack", "17c8", "70b3d57ed005a1b2", "70B3D57ED005A1B2", 17, b"\x01\x02")
    assert topic == "application/17c8/device/70b3d57ed005a1b2/command/down"
    assert body == {"devEui": "70b3d57ed005a1b2", "confirmed": False, "fPort": 17, "data": "AQI="}
    topic, body = downlink("ttn", "field-loggers@acme", "logger-0042", "70B3D57ED005A1B2", 17, b"\x01", replace=True)
    assert topic == "v3/field-loggers@acme/devices/logger-0042/down/replace"
    assert body == {"downlinks": [{"f_port": 17, "frm_payload": base64.b64encode(b"\x01").decode(),
                                   "priority": "NORMAL"}]}
    assert downlink("ttn", "a@b", "d", "00", 17, b"")[0].endswith("/down/push")


def test_settings_from_the_url_and_the_defaults():
    s = settings(mqtt_url="mqtts://field-loggers%40acme:NNSXS.KEY@eu1.cloud.thethings.network", mqtt_integration="ttn")
    assert (s.host, s.port, s.tls, s.username, s.password) == (
        "eu1.cloud.thethings.network", 8883, True, "field-loggers@acme", "NNSXS.KEY")
    assert s.filters == (DEFAULT_TOPICS["ttn"],)
    assert "NNSXS" not in s.public_url and "NNSXS" not in public_url("mqtt://u:NNSXS.KEY@h:1")
    s = settings(mqtt_share="collectors", mqtt_topic=["application/+/device/+/event/up", "application/9/#"])
    assert s.filters == ("$share/collectors/application/+/device/+/event/up", "$share/collectors/application/9/#")
    assert (settings().port, settings().client_id) == (1883, settings().client_id)  # stable across restarts


@pytest.mark.parametrize("kw, message", [
    ({"mqtt_url": "http://broker"}, "mqtt_url must look like"),
    ({"mqtt_url": "mqtt://u:secret@broker:99999"}, "not a valid URL"),
    ({"mqtt_url": "mqtt://broker/topic"}, "no path"),
    ({"mqtt_integration": "loriot"}, "mqtt_integration must be one of"),
    ({"mqtt_share": "a/b"}, "group name"),
    ({"mqtt_share": "g", "mqtt_partition": "0/2"}, "exclude each other"),
    ({"mqtt_topic": ["a/#/b"]}, "not a topic filter"),
    ({"mqtt_topic": ["$share/g/a"]}, "set mqtt_share"),
    ({"mqtt_protocol": "3"}, "mqtt_protocol"),
    ({"mqtt_inflight": 0}, "mqtt_inflight"),
])
def test_bad_settings_are_named_and_the_password_is_not_shown(kw, message):
    with pytest.raises(ValueError, match=message) as e:
        settings(**kw)
    assert "secret" not in str(e.value)


def test_config_file_environment_and_flags(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[mqtt]\nmqtt_url = "mqtt://a:b@broker:1884"\nmqtt_integration = "ttn"\n')
    cfg = load_config(f, env={"COLLECTOR_MQTT_PARTITION": "1/2"})
    assert (cfg.mqtt_url, cfg.mqtt_integration, cfg.mqtt_partition) == ("mqtt://a:b@broker:1884", "ttn", "1/2")
    assert cfg.redacted()["mqtt_url"] == "***"
    f.write_text('mqtt_urll = "mqtt://broker"\n')
    with pytest.raises(ValueError, match="unknown setting"):
        load_config(f, env={})
    out = CliRunner().invoke(main, ["serve", "--help"]).output
    for flag in ("--mqtt-url", "--mqtt-integration", "--mqtt-topic", "--mqtt-share", "--mqtt-partition"):
        assert flag in out
    r = CliRunner().invoke(main, ["serve", "--mqtt-url", "mqtt://u:hunter2@broker", "--mqtt-partition", "3/2"])
    assert r.exit_code == 2 and "mqtt_partition" in r.output and "hunter2" not in r.output
