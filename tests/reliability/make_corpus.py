"""Write the hostile-request corpus under ``tests/reliability/corpus/`` (one JSON-lines
file per category). Run once; the files are checked in and read by
``test_bad_input.py``::

    .venv/bin/python tests/reliability/make_corpus.py

Each line: ``name``, ``path``, ``headers``, ``body`` (a string; ``{"base64": ...}``
for raw bytes; ``{"repeat": s, "times": n, "prefix": a, "suffix": b}`` for large
bodies), ``expect_status`` and ``expect_error_contains`` (a piece of the ``error``
of a 4xx answer, or of the ``reason`` of a 202 ``ignored``; for a case with
``expect_stored``, the ``status`` of its 202: it must be stored).
"""

from __future__ import annotations

import base64
import copy
import json
from pathlib import Path
from typing import Any

from collector.core import wire
from collector.testing.examples import example_record
from devicesim.formats import FORMATS, PATHS, AppUplink, uplink_body

TOKEN = "corpus-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
OUT = Path(__file__).resolve().parent / "corpus"
DEV = "70B3D57ED0C0FFEE"
FRAG0 = wire.fragment(9, wire.encode_record(example_record()), 115)[0]


def good(fmt: str, payload: bytes = FRAG0, fport: int = 16) -> dict:
    return uplink_body(fmt, AppUplink(DEV, fport, 5, payload, 1_800_000_000 * 10**9, dr=3, sf=9, uid=1))[1]


def item(name: str, path: str, body: Any, status: int, contains: str, headers: dict | None = None) -> dict:
    if isinstance(body, dict | list) and not (isinstance(body, dict) and ({"base64"} == set(body) or "repeat" in body)):
        body = json.dumps(body)
    return {"name": name, "path": path, "headers": AUTH if headers is None else headers, "body": body,
            "expect_status": status, "expect_error_contains": contains}


def raw(b: bytes) -> dict:
    return {"base64": base64.b64encode(b).decode()}


def with_field(fmt: str, keys: list[str], value: Any, payload: bytes = FRAG0) -> dict:
    """A valid body of ``fmt`` with the field at ``keys`` set to ``value``."""
    d = copy.deepcopy(good(fmt, payload))
    cur = d
    for k in keys[:-1]:
        cur = cur.setdefault(k, {})
    cur[keys[-1]] = value
    return d


# the fields of each format: (keys, what the error names)
FIELDS = {
    "ttn": {"dev": (["end_device_ids", "dev_eui"], "end_device_ids.dev_eui"),
            "fport": (["uplink_message", "f_port"], "uplink_message.f_port"),
            "fcnt": (["uplink_message", "f_cnt"], "uplink_message.f_cnt"),
            "payload": (["uplink_message", "frm_payload"], "uplink_message.frm_payload"),
            "time": (["uplink_message", "received_at"], "uplink_message.received_at"),
            "freq": (["uplink_message", "settings", "frequency"], "settings.frequency")},
    "chirpstack": {"dev": (["deviceInfo", "devEui"], "deviceInfo.devEui"),
                   "fport": (["fPort"], "fPort"), "fcnt": (["fCnt"], "fCnt"), "payload": (["data"], "data"),
                   "time": (["time"], "time"), "freq": (["txInfo", "frequency"], "txInfo.frequency")},
    "generic": {"dev": (["devEui"], "devEui"), "fport": (["fPort"], "fPort"), "fcnt": (["fCnt"], "fCnt"),
                "payload": (["payload"], "payload"), "time": (["receivedAt"], "receivedAt"),
                "freq": (["frequency"], "frequency")},
}


def broken_json() -> list[dict]:
    out = []
    bodies = [
        ("truncated", '{"devEui": "70B3', "malformed JSON"), ("trailing_garbage", '{"a": 1} x', "malformed JSON"),
        ("single_quotes", "{'a': 1}", "malformed JSON"), ("empty", "", "empty"), ("whitespace", "   ", "malformed JSON"),
        ("array", "[1, 2]", "must be an object"), ("string", '"hello"', "must be an object"),
        ("number", "42", "must be an object"), ("null", "null", "must be an object"), ("true", "true", "must be an object"),
        ("unclosed_array", '{"a": [1, 2}', "malformed JSON"), ("trailing_comma", '{"a": 1,}', "malformed JSON"),
        ("comment", '{"a": 1 /* c */}', "malformed JSON"), ("bare_word", "{a: 1}", "malformed JSON"),
        ("control_char", '{"a": "x\u0001y"}', "malformed JSON"), ("lone_brace", "}", "malformed JSON"),
        ("deep_arrays", "[" * 3000 + "]" * 3000, "malformed JSON"),
        ("deep_objects", '{"a":' * 3000 + "1" + "}" * 3000, "malformed JSON"),
        ("int_5000_digits", '{"fPort": ' + "9" * 5000 + "}", "malformed JSON"),
    ]
    for fmt in FORMATS:
        for name, b, c in bodies:
            out.append(item(f"{fmt}/{name}", PATHS[fmt], b, 400, c))
        out.append(item(f"{fmt}/not_utf8", PATHS[fmt], raw(b'{"a": "\xff\xfe"}'), 400, "not UTF-8"))
        out.append(item(f"{fmt}/utf16", PATHS[fmt], raw(json.dumps(good(fmt)).encode("utf-16")), 400, "UTF-8"))
    return out


def wrong_types() -> list[dict]:
    out = []
    for fmt in FORMATS:
        f = FIELDS[fmt]
        for fld, values in (("dev", [12345, True, ["70B3D57ED0C0FFEE"], {"x": 1}]),
                            ("fport", ["sixteen", True, [16], {"p": 16}, 16.5]),
                            ("fcnt", ["abc", False, [1], 1.5]),
                            ("payload", [123, True, ["AQ=="], {"b": 1}]),
                            ("time", [1800000000, True, "yesterday", "2026-13-45T99:99:99Z"]),
                            ("freq", ["868.1MHz", True, [868100000], 868.1])):
            keys, named = f[fld]
            for i, v in enumerate(values):
                out.append(item(f"{fmt}/{fld}_{type(v).__name__}_{i}", PATHS[fmt], with_field(fmt, keys, v), 400, named))
    # containers of the wrong kind
    out += [
        item("ttn/uplink_message_array", PATHS["ttn"], {"end_device_ids": {"dev_eui": DEV}, "uplink_message": []}, 400,
             "uplink_message must be an object"),
        item("ttn/end_device_ids_string", PATHS["ttn"], {**good("ttn"), "end_device_ids": "x"}, 400, "end_device_ids"),
        item("ttn/rx_metadata_object", PATHS["ttn"], with_field("ttn", ["uplink_message", "rx_metadata"], {"a": 1}), 400,
             "rx_metadata must be an array"),
        item("ttn/settings_array", PATHS["ttn"], with_field("ttn", ["uplink_message", "settings"], [1]), 400,
             "settings must be an object"),
        item("ttn/rssi_string", PATHS["ttn"], with_field("ttn", ["uplink_message", "rx_metadata"],
                                                         [{"gateway_ids": {"gateway_id": "g"}, "rssi": "-80"}]), 400,
             "rssi"),
        item("chirpstack/deviceInfo_array", PATHS["chirpstack"], {**good("chirpstack"), "deviceInfo": []}, 400,
             "deviceInfo must be an object"),
        item("chirpstack/txInfo_string", PATHS["chirpstack"], {**good("chirpstack"), "txInfo": "x"}, 400, "txInfo"),
        item("chirpstack/rxInfo_object", PATHS["chirpstack"], {**good("chirpstack"), "rxInfo": {}}, 400, "rxInfo"),
        item("chirpstack/snr_string", PATHS["chirpstack"],
             {**good("chirpstack"), "rxInfo": [{"gatewayId": "g", "rssi": -80, "snr": "9"}]}, 400, "snr"),
        item("generic/rssi_string", PATHS["generic"], {**good("generic"), "rssi": "-80"}, 400, "rssi"),
        item("generic/dataRate_number", PATHS["generic"], {**good("generic"), "dataRate": 5}, 400, "dataRate"),
        item("generic/dataRate_nonsense", PATHS["generic"], {**good("generic"), "dataRate": "SF99BW1"}, 400, "dataRate"),
        item("generic/region_unknown", PATHS["generic"], {**good("generic"), "region": "MARS433"}, 400, "region"),
        item("generic/gatewayId_number", PATHS["generic"], {**good("generic"), "gatewayId": 7}, 400, "gatewayId"),
        item("generic/missing_payload", PATHS["generic"], {"devEui": DEV, "fPort": 16}, 400, "payload is missing"),
        item("generic/missing_devEui", PATHS["generic"], {"fPort": 16, "payload": "AQ=="}, 400, "devEui is missing"),
        item("generic/missing_fPort", PATHS["generic"], {"devEui": DEV, "payload": "AQ=="}, 400, "fPort is missing"),
        item("ttn/missing_uplink_message", PATHS["ttn"], {"end_device_ids": {"dev_eui": DEV}}, 400,
             "uplink_message is missing"),
        item("ttn/missing_end_device_ids", PATHS["ttn"], {"uplink_message": good("ttn")["uplink_message"]}, 400,
             "end_device_ids is missing"),
        item("chirpstack/missing_deviceInfo", PATHS["chirpstack"], {"fPort": 16, "data": "AQ=="}, 400,
             "deviceInfo is missing"),
    ]
    return out


def huge_numbers() -> list[dict]:
    out = []
    for fmt in FORMATS:
        f = FIELDS[fmt]
        for fld, values in (("fport", [256, -1, 10**30, 1e308]),
                            ("fcnt", [2**32, 2**70, -5, 1e300]),
                            ("freq", [2**32, 10**30, -868100000])):
            keys, named = f[fld]
            for i, v in enumerate(values):
                out.append(item(f"{fmt}/{fld}_huge_{i}", PATHS[fmt], with_field(fmt, keys, v), 400, named))
        keys, named = f["fcnt"]
        out.append(item(f"{fmt}/fcnt_string_21_digits", PATHS[fmt], with_field(fmt, keys, "9" * 21), 400, named))
        txt = json.dumps(good(fmt))
        out.append(item(f"{fmt}/int_4301_digits", PATHS[fmt], txt[:-1] + ', "x": ' + "7" * 4301 + "}", 400,
                        "malformed JSON"))
    for name, lit in (("nan", "NaN"), ("infinity", "Infinity"), ("minus_infinity", "-Infinity"), ("1e400", "1e400")):
        g = json.dumps({**good("generic"), "rssi": 0.5})
        out.append(item(f"generic/rssi_{name}", PATHS["generic"], g.replace("0.5", lit), 400, "rssi"))
        g = json.dumps({**good("generic"), "snr": 0.5})
        out.append(item(f"generic/snr_{name}", PATHS["generic"], g.replace("0.5", lit), 400, "snr"))
        t = good("ttn")
        t["uplink_message"]["rx_metadata"] = [{"gateway_ids": {"gateway_id": "g"}, "rssi": -80, "snr": 0.5}]
        out.append(item(f"ttn/snr_{name}", PATHS["ttn"], json.dumps(t).replace("0.5", lit), 400, "snr"))
        c = {**good("chirpstack"), "rxInfo": [{"gatewayId": "g", "rssi": -80, "snr": 0.5}]}
        out.append(item(f"chirpstack/snr_{name}", PATHS["chirpstack"], json.dumps(c).replace("0.5", lit), 400, "snr"))
    out += [
        item("ttn/spreading_factor_99", PATHS["ttn"], with_field(
            "ttn", ["uplink_message", "settings", "data_rate"], {"lora": {"spreading_factor": 99, "bandwidth": 125000}}),
            400, "spreading_factor"),
        item("ttn/data_rate_index_99", PATHS["ttn"], with_field(
            "ttn", ["uplink_message", "settings"], {"data_rate_index": 99}), 400, "data_rate_index"),
        item("chirpstack/dr_99", PATHS["chirpstack"], {**{k: v for k, v in good("chirpstack").items() if k != "txInfo"},
                                                       "dr": 99}, 400, "dr"),
        item("chirpstack/spreadingFactor_99", PATHS["chirpstack"], {**good("chirpstack"), "txInfo": {
            "frequency": 868100000, "modulation": {"lora": {"spreadingFactor": 99, "bandwidth": 125000}}}}, 400,
            "spreadingFactor"),
    ]
    return out


def bad_encoding() -> list[dict]:
    out = []
    for fmt in FORMATS:
        f = FIELDS[fmt]
        keys, named = f["payload"]
        for i, v in enumerate(["***", "AQ=", "AQ===", "A", "0102ZZ", "AQ==\n", "AQ ==", "%%%%", "AQ==AQ==!",
                               "ü", "AQ\u0000=="]):
            out.append(item(f"{fmt}/payload_bad_base64_{i}", PATHS[fmt], with_field(fmt, keys, v), 400,
                            f"{named} is not valid base64"))
        keys, named = f["dev"]
        for i, v in enumerate(["70B3D57ED0C0FFE", "70B3D57ED0C0FFEEE", "70B3-D57E-D0C0-FFEE", "ZZB3D57ED0C0FFEE",
                               "", "0x70B3D57ED0C0FF", " 70B3D57ED0C0FFEE", "70B3D57ED0C0FFEE\n",
                               "７０B3D57ED0C0FFEE", "70b3d57ed0c0ffeg"]):
            out.append(item(f"{fmt}/dev_eui_bad_{i}", PATHS[fmt], with_field(fmt, keys, v), 400, named))
        # valid JSON, but a lone UTF-16 surrogate escape is no character: nothing can store it
        for i, v in enumerate(["gw-\ud800", "\udfff", "a\udc00b"]):
            out.append(item(f"{fmt}/lone_surrogate_{i}", PATHS[fmt], with_field(fmt, ["note"], v), 400, "surrogate"))
    return out


def oversized() -> list[dict]:
    out = []
    for fmt in FORMATS:
        for n in (65 * 1024, 200 * 1024, 1024 * 1024):
            out.append(item(f"{fmt}/body_{n}", PATHS[fmt],
                            {"repeat": " ", "times": n, "prefix": json.dumps(good(fmt))[:-1] + ', "pad": "', "suffix": '"}'},
                            413, "limit"))
        out.append(item(f"{fmt}/whitespace_70k", PATHS[fmt], {"repeat": " ", "times": 70 * 1024, "prefix": "{",
                                                              "suffix": "}"}, 413, "limit"))
    return out


def header_lies() -> list[dict]:
    """Fragment headers that are invalid on their own (400 with a code). The lies
    that are only lies relative to an open message (index >= count, another S, a
    conflicting duplicate) are accepted and recorded: see test_bad_input.py."""
    out = []
    cases = [
        ("one_byte", b"\x09", "a header needs at least 2", "fragment_short"),
        ("empty_payload", b"", "a header needs at least 2", "fragment_short"),
        ("frag0_two_bytes", b"\x09\x00", "its header needs 3", "fragment_short"),
        ("count_zero", b"\x09\x00\x00\x01\x02", "count 0", "fragment_count_zero"),
        ("frag0_no_record_bytes", b"\x09\x00\x05", "carries no record bytes", "fragment_empty"),
        ("fragN_no_record_bytes", b"\x09\x03", "carries no record bytes", "fragment_empty"),
        ("too_long_243", b"\x09\x01" + b"\x00" * 241, "at most 242", "fragment_long"),
        ("too_long_1000", b"\x09\x00\x05" + b"\x00" * 997, "at most 242", "fragment_long"),
    ]
    for fmt in FORMATS:
        for name, payload, c, code in cases:
            body = good(fmt, payload)
            if not payload:  # an absent payload is an empty one
                keys = FIELDS[fmt]["payload"][0]
                body = with_field(fmt, keys, "")
            out.append({**item(f"{fmt}/{name}", PATHS[fmt], body, 400, c), "expect_code": code})
    return out


def wrong_port_and_events() -> list[dict]:
    out = []
    for fmt in FORMATS:
        for p in (0, 1, 2, 15, 18, 224, 255):  # 16 is v1, 17 wire format v2
            out.append(item(f"{fmt}/fport_{p}", PATHS[fmt], good(fmt, fport=p), 202, f"fPort {p} is not"))
    for ev in ("join", "status", "ack", "txack", "log", "location", "integration"):
        out.append(item(f"chirpstack/event_{ev}", f"/uplink/chirpstack?event={ev}", good("chirpstack"), 202,
                        "ChirpStack event"))
    # without the event the query string was lost: the body may be an uplink, so it is
    # refused rather than acknowledged and dropped (issue 12, item 17)
    out.append(item("chirpstack/event_empty", "/uplink/chirpstack?event=", good("chirpstack"), 400,
                    "no ChirpStack event given"))
    out.append(item("chirpstack/no_event", "/uplink/chirpstack", good("chirpstack"), 400, "no ChirpStack event given"))
    # uplinks simulated from The Things Stack console are not measurement data (simulated_uplinks = ignore)
    out.append(item("ttn/simulated", PATHS["ttn"], {**good("ttn"), "simulated": True}, 202, "simulated uplink"))
    for kind in ("join_accept", "downlink_ack", "downlink_nack", "downlink_sent", "downlink_failed",
                 "downlink_queued", "location_solved", "service_data"):
        out.append(item(f"ttn/{kind}", PATHS["ttn"], {"end_device_ids": {"dev_eui": DEV}, kind: {}}, 202,
                        f"not an uplink message ({kind})"))
    return out


def auth() -> list[dict]:
    out = []
    bad = [("none", {}), ("empty_bearer", {"Authorization": "Bearer "}), ("wrong", {"Authorization": "Bearer nope"}),
           ("prefix", {"Authorization": f"Bearer {TOKEN[:-1]}"}), ("suffix", {"Authorization": f"Bearer {TOKEN}x"}),
           ("upper", {"Authorization": f"Bearer {TOKEN.upper()}"}),
           ("basic", {"Authorization": "Basic " + base64.b64encode(f"u:{TOKEN}".encode()).decode()}),
           ("token_scheme", {"Authorization": f"Token {TOKEN}"}), ("other_header", {"X-Api-Key": TOKEN}),
           ("query_only", {}), ("two_tokens", {"Authorization": f"Bearer {TOKEN} {TOKEN}"})]
    for fmt in FORMATS:
        for name, h in bad:
            path = PATHS[fmt] + (("&" if "?" in PATHS[fmt] else "?") + f"token={TOKEN}" if name == "query_only" else "")
            out.append(item(f"{fmt}/token_{name}", path, good(fmt), 401, "missing or wrong token",
                            {**h, "Content-Type": "application/json"}))
    for name, h in (("api_none", {}), ("api_wrong", {"Authorization": "Bearer nope"})):
        out.append(item(f"admin/{name}", "/admin/clock", {"advance": 1}, 401, "missing or wrong token", h))
    # the ingest token (what every network server holds) does not open the API (issue 12, item 18)
    out.append(item("admin/ingest_token", "/admin/clock", {"advance": 1}, 401, "missing or wrong token"))
    out.append(item("api/ingest_token_retry_all", "/api/deadletters/retry", "", 401, "missing or wrong token"))
    out.append({**item("api/ingest_token_status", "/api/status", "", 401, "missing or wrong token"), "method": "GET"})
    return out


def content_type() -> list[dict]:
    out = []
    for fmt in FORMATS:
        for ct in ("text/plain", "application/protobuf", "application/x-www-form-urlencoded", "application/xml",
                   "multipart/form-data; boundary=x"):
            out.append(item(f"{fmt}/content_type_{ct.split(';')[0].replace('/', '_')}", PATHS[fmt], good(fmt), 415,
                            "must be JSON", {"Authorization": f"Bearer {TOKEN}", "Content-Type": ct}))
    return out


def receive_times() -> list[dict]:
    """Receive times a network server may send that no document can carry (issue 12,
    item 2): unset (Go's zero time), before 1970, moved past year 9999 or before year 1
    by their offset. Each is *accepted and stored* (``expect_stored``) with the
    collector's own receive time; a date that does not exist is a 400."""
    out = []
    times = [("go_zero_time", "0001-01-01T00:00:00Z"), ("before_1970", "1969-07-20T20:17:40Z"),
             ("offset_past_9999", "9999-12-31T23:30:00-01:00"), ("offset_before_year_1", "0001-01-01T00:30:00+01:00")]
    n = 0
    for fmt in FORMATS:
        keys, _name = FIELDS[fmt]["time"]
        for label, value in times:
            n += 1  # a fragment of its own (another msg_id), so none is a duplicate of another
            frag = wire.fragment(100 + n, wire.encode_record(example_record()), 115)[0]
            case = item(f"{fmt}/{label}", PATHS[fmt], with_field(fmt, keys, value, frag), 202, "accepted")
            case["expect_stored"] = True
            out.append(case)
        out.append(item(f"{fmt}/year_zero", PATHS[fmt], with_field(fmt, keys, "0000-01-01T00:00:00Z"), 400,
                        "an RFC 3339 time stamp is required"))

    return out


API_TOKEN = "corpus-api-token"
API_AUTH = {"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"}


def errors_json() -> list[dict]:
    """Inputs that were answered 500, or with a non-JSON error page (issue 12, items
    13 and 14). ``method`` is GET/POST/... (POST when absent)."""
    out = []
    for fmt in FORMATS:
        # (a time-zone offset moving a time past year 9999 or before year 1: receive_times)
        # bytes that are not UTF-8 in the token header: no token, not a crash
        for i, h in enumerate(["Bearer \xff\xfe", "\xe9t\xe9", f"Bearer {TOKEN}\xff"]):
            out.append(item(f"{fmt}/auth_not_utf8_{i}", PATHS[fmt], good(fmt), 401, "missing or wrong token",
                            {"Authorization": h, "Content-Type": "application/json"}))
        # (br: without the Brotli package aiohttp refuses it while parsing the request)
        for enc, says in (("gzip", "Content-Encoding"), ("deflate", "Content-Encoding"), ("br", "br")):
            out.append(item(f"{fmt}/content_encoding_{enc}_not_encoded", PATHS[fmt], good(fmt), 400,
                            says, {**AUTH, "Content-Encoding": enc}))
        out.append(item(f"{fmt}/content_encoding_unknown", PATHS[fmt], good(fmt), 415, "Content-Encoding",
                        {**AUTH, "Content-Encoding": "zstd-nonsense"}))
    for path in ("/api/status", "/admin/clock", "/api/messages"):
        out.append({**item(f"api/auth_not_utf8{path.replace('/', '_')}", path, "", 401, "missing or wrong token",
                           {"Authorization": "Bearer \xff"}), "method": "GET" if path != "/admin/clock" else "POST"})
    for what, ident in (("superscript", "%C2%B2"), ("digits_19", "9" * 19), ("digits_40", "1" * 40),
                        ("negative_19", "-" + "9" * 19), ("arabic_digits", "%D9%A1%D9%A2")):
        for route, noun in (("incidents", "incident"), ("messages", "message"), ("deadletters", "dead letter")):
            out.append({**item(f"api/{route}_{what}", f"/api/{route}/{ident}", "", 404, f"no {noun}", API_AUTH),
                        "method": "GET"})
    out.append({**item("api/retry_digits_40", "/api/deadletters/" + "1" * 40 + "/retry", "", 404, "no dead letter",
                       API_AUTH)})
    for name, body in (("advance_nan", '{"advance": NaN}'), ("now_nan", '{"now": NaN}'),
                       ("advance_infinity", '{"advance": Infinity}'), ("now_minus_infinity", '{"now": -Infinity}'),
                       ("advance_1e400", '{"advance": 1e400}'), ("now_1e300", '{"now": 1e300}')):
        out.append(item(f"admin/clock_{name}", "/admin/clock", body, 400, "finite", API_AUTH))
    # aiohttp's own error pages are JSON too
    out += [
        {**item("http/no_such_route", "/no/such/route", "", 404, "no route", API_AUTH), "method": "GET"},
        {**item("http/get_on_ingest", PATHS["generic"], "", 405, "method GET", API_AUTH), "method": "GET"},
        {**item("http/delete_api", "/api/status", "", 405, "method DELETE", API_AUTH), "method": "DELETE"},
        item("http/post_healthz", "/healthz", "{}", 405, "method POST", API_AUTH),
        item("http/expect_unknown", PATHS["generic"], good("generic"), 417, "Expect", {**AUTH, "Expect": "fly"}),
    ]
    return out


CATEGORIES = {
    "broken_json": broken_json, "wrong_types": wrong_types, "huge_numbers": huge_numbers,
    "bad_encoding": bad_encoding, "oversized": oversized, "header_lies": header_lies,
    "wrong_port_and_events": wrong_port_and_events, "auth": auth, "content_type": content_type,
    "errors_json": errors_json,
    "receive_times": receive_times,
}


def main() -> None:
    OUT.mkdir(exist_ok=True)
    total = 0
    for name, make in CATEGORIES.items():
        items = make()
        names = [i["name"] for i in items]
        assert len(names) == len(set(names)), f"duplicate names in {name}"
        with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as f:
            for i in items:
                f.write(json.dumps(i, ensure_ascii=False) + "\n")
        total += len(items)
        print(f"{name}: {len(items)}")
    print(f"total: {total}")


if __name__ == "__main__":
    main()
