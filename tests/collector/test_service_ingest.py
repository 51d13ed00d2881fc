"""Ingest over real HTTP: every format, authentication, the malformed-request corpus."""

from __future__ import annotations

import json
import os
import stat

import pytest

from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import INGEST_TOKEN, LiveService, http
from devicesim.formats import AppUplink, uplink_body

DEV = "70B3D57ED005A1B2"
T0_NS = 1_800_000_000 * 10**9


def frags(msg_id: int = 1, size: int = 115) -> list[bytes]:
    return wire.fragment(msg_id, wire.encode_record(example_record()), size)


def body(fmt: str, payload: bytes, i: int = 0, dev: str = DEV, fport: int = 16) -> tuple[str, dict]:
    return uplink_body(fmt, AppUplink(dev, fport, 100 + i, payload, T0_NS + i * 10**9, dr=3, sf=9, uid=i))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveService(tmp_path_factory.mktemp("ingest") / "c.db", stub=False) as s:
        yield s


@pytest.mark.parametrize("fmt", ["ttn", "chirpstack", "generic"])
def test_each_format_is_accepted_and_completes_a_message(live, fmt):
    dev = {"ttn": "00000000000000A1", "chirpstack": "00000000000000A2", "generic": "00000000000000A3"}[fmt]
    answers = live.post_uplinks(body(fmt, f, i, dev) for i, f in enumerate(frags(9)))
    assert [a.status for a in answers] == [202] * 6
    assert all(a.json()["status"] == "accepted" for a in answers)
    assert answers[-1].json()["closed"] == [answers[0].json()["message"]]
    msgs = live.get(f"/api/messages?device={dev}").json()["messages"]
    assert len(msgs) == 1
    m = msgs[0]
    assert (m["devEui"], m["msgId"], m["state"], m["fragmentsExpected"], m["fragmentsReceived"]) == \
        (dev, 9, "complete", 6, 6)
    assert m["delivery"] == "pending"  # no Web App configured in this module


def test_duplicate_and_other_fport_and_other_events(live):
    f = frags(10)[0]
    path, b = body("generic", f, 0, "00000000000000B1")
    assert live.post(path, b).json()["status"] == "accepted"
    dup = live.post(path, b)
    assert dup.status == 202 and dup.json()["status"] == "duplicate"
    path, b = body("ttn", b"\x01\x02\x03", 1, "00000000000000B1", fport=2)
    r = live.post(path, b)
    assert r.status == 202 and r.json()["status"] == "ignored" and "fPort 2" in r.json()["reason"]
    r = live.post("/uplink/chirpstack?event=join", {"deviceInfo": {"devEui": "00000000000000b1"}})
    assert r.status == 202 and r.json() == {"status": "ignored", "reason": "ChirpStack event 'join' is not handled"}
    metrics = http("GET", live.url + "/metrics").body.decode()
    assert 'collector_uplinks_total{integration="ttn",outcome="ignored"} 1.0' in metrics
    assert 'collector_uplinks_total{integration="generic",outcome="duplicate"} 1.0' in metrics


def test_authentication(live):
    path, b = body("generic", frags(11)[0], 0, "00000000000000C1")
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Token {INGEST_TOKEN}x"}):
        r = http("POST", live.url + path, b, headers)
        assert r.status == 401 and "token" in r.json()["error"]
    # the APIs want a token too
    assert http("GET", live.url + "/api/messages").status == 401
    assert http("GET", live.url + "/healthz").status == 200
    # nothing was stored by the refused requests
    assert live.get("/api/messages?device=00000000000000C1").json()["messages"] == []


def test_custom_auth_header(tmp_path):
    with LiveService(tmp_path / "c.db", stub=False, auth_header="X-Api-Key", ttn_token=["tts-only"],
                     ingest_token=[]) as s:
        path, b = body("ttn", frags(1)[0])
        assert http("POST", s.url + path, b, {"X-Api-Key": "tts-only"}).status == 202
        assert http("POST", s.url + path, b, {"X-Api-Key": "nope"}).status == 401
        # a token for one integration does not open another
        gpath, gb = body("generic", frags(2)[0])
        assert http("POST", s.url + gpath, gb, {"X-Api-Key": "tts-only"}).status == 401


GOOD = {"devEui": DEV, "fPort": 16, "payload": "AQADAAAA"}

CORPUS = [
    # (path, raw body, content type, status, fragment of the error)
    ("/uplink", b"{not json", "application/json", 400, "malformed JSON"),
    ("/uplink", b"", "application/json", 400, "empty"),
    ("/uplink", b"[]", "application/json", 400, "must be an object"),
    ("/uplink", b"\xff", "application/json", 400, "not UTF-8"),
    ("/uplink", json.dumps({**GOOD, "devEui": "xyz"}).encode(), "application/json", 400, "16 hex digits"),
    ("/uplink", json.dumps({k: v for k, v in GOOD.items() if k != "payload"}).encode(), "application/json", 400,
     "field payload is missing"),
    ("/uplink", json.dumps({**GOOD, "payload": "***"}).encode(), "application/json", 400, "not valid base64"),
    ("/uplink", json.dumps({**GOOD, "payload": "AQ=="}).encode(), "application/json", 400,
     "invalid fragment header"),
    ("/uplink", json.dumps({**GOOD, "payload": "AQAAAA=="}).encode(), "application/json", 400, "count 0"),
    ("/uplink", json.dumps(GOOD).encode(), "text/plain", 415, "must be JSON"),
    ("/uplink/chirpstack?event=up", b"\x0a\x02", "application/octet-stream", 415, "JSON"),
    ("/uplink", b"{" + b" " * (70 * 1024) + b"}", "application/json", 413, "limit"),
    ("/uplink/ttn", json.dumps({"end_device_ids": {}}).encode(), "application/json", 400,
     "uplink_message is missing"),
    ("/uplink/ttn", json.dumps({"uplink_message": {}}).encode(), "application/json", 400,
     "end_device_ids is missing"),
    ("/uplink/chirpstack?event=up", json.dumps({"deviceInfo": {"devEui": "70b3"}}).encode(), "application/json",
     400, "deviceInfo.devEui"),
]


@pytest.mark.parametrize("path,raw,ctype,status,fragment", CORPUS)
def test_malformed_requests_are_answered_4xx_naming_the_problem(live, path, raw, ctype, status, fragment):
    r = http("POST", live.url + path, raw, {**live.auth(), "Content-Type": ctype})
    assert r.status == status, r
    assert r.headers["Content-Type"].startswith("application/json")
    assert fragment in r.json()["error"]


def test_unknown_routes_and_methods(live):
    assert http("GET", live.url + "/uplink", None, live.auth()).status == 405
    assert http("POST", live.url + "/nope", b"{}", live.auth()).status == 404


def test_store_full_is_503_with_retry_after(tmp_path):
    with LiveService(tmp_path / "c.db", stub=False, max_pending_writes=0) as s:
        r = s.post(*body("generic", frags(1)[0]))
        assert r.status == 503 and r.headers["Retry-After"] == "5"
        assert "store" in r.json()["error"]


def test_database_file_is_owner_only(tmp_path):
    db = tmp_path / "private.db"
    with LiveService(db, stub=False):
        mode = stat.S_IMODE(os.stat(db).st_mode)
        assert mode == 0o600, oct(mode)


def test_no_token_configured_refuses_to_start(tmp_path):
    s = LiveService(tmp_path / "c.db", stub=False, ingest_token=[])
    with pytest.raises(RuntimeError, match="no ingest token"):
        s.start()
    s.loop.call_soon_threadsafe(s.loop.stop)


def test_an_uplink_that_cannot_be_stored_is_refused_before_the_reassembler_holds_it(live):
    """The gate refuses a lone surrogate escape; should such a string reach the
    service all the same, it is answered 400 before the reassembler counts the
    fragment as held - the same fragment with a storable body is then accepted, not
    answered "duplicate" for a fragment that was never stored."""
    from collector.core.uplink import Uplink
    from collector.service.gate import Answer
    from collector.service.ingest_http import INGEST

    dev = "70B3D57ED005BEEF"
    f0 = frags(7)[0]
    bad = Uplink(dev, 16, f0, 1_800_000_000_000, gateway="gw-\ud800")
    ans = live.run(live.app[INGEST].accept(bad, "generic"))
    assert isinstance(ans, Answer) and ans.status == 400 and "cannot be stored" in ans.body["error"]
    r = live.post(*body("generic", f0, dev=dev))
    assert (r.status, r.json()["status"]) == (202, "accepted")
