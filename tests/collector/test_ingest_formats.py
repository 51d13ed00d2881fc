"""The three ingest formats parse into the same Uplink; bad bodies name their problem."""

from __future__ import annotations

import copy

import pytest

from collector.core.ingest import (
    Ignored,
    IngestError,
    parse_chirpstack,
    parse_generic,
    parse_json_body,
    parse_ttn,
)
from devicesim.formats import AppUplink, GatewayRx, chirpstack_body, generic_body, ttn_body

NOW_MS = 1_800_000_000_000
NS = 1_795_500_001_204_773_143


def app_uplink(**kw) -> AppUplink:
    base = dict(dev_eui="70b3d57ed005a1b2", fport=16, fcnt=1834, payload=bytes([7, 0, 3]) + b"abc",
                received_ns=NS, region="EU868", dr=3, sf=9, bw_hz=125_000, frequency_hz=868_300_000,
                gateways=(GatewayRx("gw-roof", -97, 7.5, NS // 1_000_000), GatewayRx("gw-far", -110, -3, 0)))
    base.update(kw)
    return AppUplink(**base)


@pytest.mark.parametrize("parse,build", [(parse_ttn, ttn_body), (parse_chirpstack, chirpstack_body),
                                         (parse_generic, generic_body)])
def test_each_format_gives_the_same_uplink(parse, build):
    up = parse(build(app_uplink()), NOW_MS)
    assert up.dev_eui == "70B3D57ED005A1B2"
    assert (up.fport, up.fcnt, up.payload) == (16, 1834, bytes([7, 0, 3]) + b"abc")
    assert up.received_ms == NS // 1_000_000
    assert up.data_rate == "SF9BW125"
    assert up.gateway == "gw-roof" and up.rssi == -97 and up.snr == 7.5
    if parse is not parse_generic:
        assert up.region == "EU868" and up.frequency_hz == 868_300_000


def test_left_out_defaults_are_read_as_defaults():
    # TTS and ChirpStack leave out f_cnt 0 and an empty payload
    for parse, build in ((parse_ttn, ttn_body), (parse_chirpstack, chirpstack_body)):
        up = parse(build(app_uplink(fcnt=0, payload=b"", gateways=())), NOW_MS)
        assert up.fcnt == 0 and up.payload == b"" and up.gateway is None
    # fPort 0 (MAC only) is left out too
    body = ttn_body(app_uplink(fport=0))
    assert "f_port" not in body["uplink_message"]
    assert parse_ttn(body, NOW_MS).fport == 0


def test_tts_older_settings_layout_with_data_rate_index():
    body = ttn_body(app_uplink())
    body["uplink_message"]["settings"] = {"data_rate_index": 0, "coding_rate": "4/5", "frequency": "868100000"}
    up = parse_ttn(body, NOW_MS)
    assert up.data_rate == "SF12BW125" and up.region == "EU868"
    body["uplink_message"]["settings"] = {"data_rate_index": 3, "frequency": "904300000"}
    assert parse_ttn(body, NOW_MS).data_rate == "SF7BW125"  # US915 DR3


def test_tts_without_receive_times_uses_the_clock():
    body = ttn_body(app_uplink())
    del body["uplink_message"]["received_at"]
    assert parse_ttn(body, NOW_MS).received_ms == (NS + 15_000_000) // 1_000_000  # top-level received_at
    del body["received_at"]
    assert parse_ttn(body, NOW_MS).received_ms == NOW_MS


def test_tts_other_message_types_are_ignored():
    with pytest.raises(Ignored, match="join_accept"):
        parse_ttn({"end_device_ids": {"dev_eui": "70B3D57ED005A1B2"}, "join_accept": {}}, NOW_MS)


def test_chirpstack_data_rate_from_dr_when_modulation_is_absent():
    body = chirpstack_body(app_uplink(dr=0))
    del body["txInfo"]["modulation"]
    assert "dr" not in body  # DR0 is a default and left out
    assert parse_chirpstack(body, NOW_MS).data_rate == "SF12BW125"


def test_generic_minimal_body():
    up = parse_generic({"devEui": "70b3d57ed005a1b2", "fPort": 16, "payload": "AAEC"}, NOW_MS)
    assert up.received_ms == NOW_MS and up.payload == b"\x00\x01\x02" and up.data_rate is None


@pytest.mark.parametrize("mutate,message", [
    (lambda b: b.pop("devEui"), "field devEui is missing"),
    (lambda b: b.update(devEui="70B3D57ED005A1"), "16 hex digits"),
    (lambda b: b.update(devEui="70B3D57ED005A1ZZ"), "16 hex digits"),
    (lambda b: b.update(payload="not base64!"), "field payload is not valid base64"),
    (lambda b: b.update(fPort="sixteen"), "field fPort must be an integer"),
    (lambda b: b.update(fPort=300), "field fPort is 300"),
    (lambda b: b.update(fPort=True), "field fPort must be an integer, not a boolean"),
    (lambda b: b.update(receivedAt="yesterday"), "field receivedAt"),
    (lambda b: b.update(dataRate="SF99"), "field dataRate"),
    (lambda b: b.update(rssi="loud"), "field rssi must be a number"),
])
def test_generic_errors_name_the_field(mutate, message):
    body = generic_body(app_uplink())
    mutate(body)
    with pytest.raises(IngestError, match=message):
        parse_generic(body, NOW_MS)


@pytest.mark.parametrize("path,value,message", [
    (("end_device_ids", "dev_eui"), "xyz", "end_device_ids.dev_eui"),
    (("uplink_message", "frm_payload"), "%%%", "uplink_message.frm_payload is not valid base64"),
    (("uplink_message", "f_port"), -1, "uplink_message.f_port is -1"),
    (("uplink_message", "settings"), [], "uplink_message.settings must be an object"),
    (("uplink_message", "received_at"), 12, "uplink_message.received_at must be a string"),
])
def test_ttn_errors_name_the_field(path, value, message):
    body = copy.deepcopy(ttn_body(app_uplink()))
    body[path[0]][path[1]] = value
    with pytest.raises(IngestError, match=message):
        parse_ttn(body, NOW_MS)
    with pytest.raises(IngestError, match="field uplink_message is missing"):
        parse_ttn({"end_device_ids": {"dev_eui": "70B3D57ED005A1B2"}}, NOW_MS)


def test_chirpstack_errors_name_the_field():
    body = chirpstack_body(app_uplink())
    del body["deviceInfo"]
    with pytest.raises(IngestError, match="field deviceInfo is missing"):
        parse_chirpstack(body, NOW_MS)
    body = chirpstack_body(app_uplink())
    body["data"] = "@@"
    with pytest.raises(IngestError, match="field data is not valid base64"):
        parse_chirpstack(body, NOW_MS)


@pytest.mark.parametrize("raw,message", [
    (b"", "empty"),
    (b"{", "malformed JSON"),
    (b"[1, 2]", "must be an object, not an array"),
    (b"\xff\xfe", "not UTF-8"),
])
def test_json_body_errors(raw, message):
    with pytest.raises(IngestError, match=message):
        parse_json_body(raw)


@pytest.mark.parametrize("common_name,region", [("EU868", "EU868"), ("US915", "US915"), ("AU915", "AU915"),
                                               ("AS923", "AS923-1"), ("AS923_2", "AS923-2"), ("AS923_4", "AS923-4")])
def test_chirpstack_region_common_name_is_read_for_every_known_region(common_name, region):
    """ChirpStack names its regions by its Region enum (AS923_2, ...); the data rate is
    read in the region the gateway metadata names, not guessed from the frequency."""
    body = chirpstack_body(app_uplink(frequency_hz=923_200_000))
    for g in body["rxInfo"]:
        g["metadata"]["region_common_name"] = common_name
    assert parse_chirpstack(body, NOW_MS).region == region
