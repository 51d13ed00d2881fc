"""The msgspec reading of webhook bodies (collector.core.webhook) against the full,
hand-written one (collector.core.ingest): whatever the fast path answers, the full
reading answers too; what it refuses, the full reading decides."""

from __future__ import annotations

import contextlib
import copy
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.core import ingest, webhook
from devicesim.formats import AppUplink, GatewayRx, ttn_body

T = 1_800_000_000 * 10**9


def _body() -> dict:
    up = AppUplink("70b3d57e00000001", 16, 8, b"\x00\x01abc", T, dr=3, sf=9, frequency_hz=868_300_000,
                   gateways=(GatewayRx("gw-roof", -97, 7.5, T // 10**6, "9C5C8E00001A05C4"),
                             GatewayRx("gw-hill", -80, 2.0, T // 10**6, "9C5C8E00001A05C5")), airtime_s=0.185)
    return ttn_body(up)


def _full(body: bytes):
    try:
        return ingest.parse_ttn(ingest.parse_json_body(body), 5, "EU868")
    except (ingest.IngestError, ingest.Ignored) as e:
        return type(e)


def _fast(body: bytes):
    try:
        return webhook._tts(body, 5)
    except (webhook._Refused, ingest.IngestError, UnicodeEncodeError):
        return None


def test_the_usual_body_takes_the_fast_path_and_reads_as_the_full_reading():
    raw = json.dumps(_body()).encode()
    up = _fast(raw)
    assert up is not None  # else the schema is dead code
    assert up == _full(raw)
    assert (up.dev_eui, up.gateway, up.rssi, up.data_rate, up.frequency_hz) == (
        "70B3D57E00000001", "gw-hill", -80.0, "SF9BW125", 868_300_000)


PATHS = [
    ("uplink_message", "f_port"), ("uplink_message", "f_cnt"), ("uplink_message", "frm_payload"),
    ("uplink_message", "received_at"), ("received_at",), ("uplink_message", "settings", "frequency"),
    ("uplink_message", "settings", "data_rate", "lora", "spreading_factor"),
    ("uplink_message", "settings", "data_rate", "lora", "bandwidth"), ("uplink_message", "settings", "data_rate"),
    ("uplink_message", "settings", "data_rate_index"), ("uplink_message", "settings", "data_rate", "data_rate_index"),
    ("uplink_message", "rx_metadata"), ("uplink_message", "rx_metadata", 0, "rssi"),
    ("uplink_message", "rx_metadata", 1, "rssi"), ("uplink_message", "rx_metadata", 0, "snr"),
    ("uplink_message", "rx_metadata", 1, "gateway_ids"), ("uplink_message", "rx_metadata", 1, "gateway_ids", "gateway_id"),
    ("uplink_message", "rx_metadata", 1, "channel_rssi"), ("end_device_ids", "dev_eui"), ("end_device_ids",),
    ("uplink_message",),
]
VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-2**33, 2**33), st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(["", "16", "868100000", "AAE=", "%%", "70B3D57E0000000A", "2026-11-24T06:00:01.5+01:00",
                     "0001-01-01T00:00:00Z", "2026-02-30T00:00:00Z", "2026-11-24T06:00:60Z", "1e3", 1e400]),
    st.just({}), st.just([]), st.just([1, {}]), st.just({"lora": {"spreading_factor": 7}}),
)
DROP = object()


def _set(doc: dict, path: tuple, value) -> None:
    *head, last = path
    for k in head:
        doc = doc[k]
    if value is DROP:
        if isinstance(doc, dict):
            doc.pop(last, None)
    else:
        doc[last] = value


def _same_or_refused(changes) -> None:
    doc = _body()
    for path, value in changes:
        with contextlib.suppress(KeyError, IndexError, TypeError):  # a parent replaced by an earlier change
            _set(doc, path, value if value is DROP else copy.deepcopy(value))
    raw = json.dumps(doc).encode()
    fast = _fast(raw)
    if fast is not None:
        assert fast == _full(raw)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(PATHS), st.one_of(VALUES, st.just(DROP))), max_size=3))
def test_whatever_the_fast_path_answers_the_full_reading_answers_too(changes):
    _same_or_refused(changes)


@pytest.mark.parametrize("changes", [
    [(("uplink_message", "settings", "data_rate"), {}), (("uplink_message", "settings", "data_rate_index"), 3)],
    [(("uplink_message", "settings", "data_rate", "lora"), DROP),
     (("uplink_message", "settings", "data_rate", "data_rate_index"), 5)],
    [(("uplink_message", "rx_metadata", 1, "rssi"), None), (("uplink_message", "rx_metadata", 0, "rssi"), DROP)],
    [(("uplink_message", "received_at"), DROP), (("received_at",), "2026-11-24T06:00:01.5+01:00")],
    [(("uplink_message", "f_cnt"), "7"), (("uplink_message", "settings", "frequency"), "4294967296")],
])
def test_rarer_shapes_the_full_reading_knows(changes):
    _same_or_refused(changes)


@pytest.mark.parametrize("raw", [b"", b"[1]", b'{"uplink_message": null}', b'{"join_accept": {}}',
                                 b'{"end_device_ids": {"dev_eui": "\\ud800"}, "uplink_message": {}}'])
def test_what_the_schema_refuses_gets_the_full_readings_answer(raw):
    with pytest.raises((ingest.IngestError, ingest.Ignored)) as fast:
        webhook.parse_body("ttn", raw, 5)
    with pytest.raises((ingest.IngestError, ingest.Ignored)) as full:
        ingest.parse_ttn(ingest.parse_json_body(raw), 5)
    assert str(fast.value) == str(full.value)
