"""Hostile input: the checked-in corpus (tests/reliability/corpus/*.jsonl, written by
make_corpus.py), slow clients on raw sockets, and the header lies that are only
lies relative to an open message.

Every corpus request gets its documented 4xx with a precise reason (or 202
``ignored``), never a 5xx; the service stays up; nothing is stored (row counts of
the database file before and after each request) - except the cases marked
``expect_stored`` (receive times the collector replaces by its own), which are."""

from __future__ import annotations

import socket
import sys
import time

import pytest

from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, http
from devicesim.formats import AppUplink, uplink_body

# loaded by conftest.py (tests/reliability/workloads.py), shared with reports/reliability.py
W = sys.modules["reliability_workloads"]
TOKEN = W.CORPUS_TOKEN
READ_TIMEOUT = 1.0
CORPUS = W.load_corpus()
body_bytes = W.body_bytes
counts = W.ingest_counts


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    db = tmp_path_factory.mktemp("bad-input") / "c.db"
    with LiveService(db, stub=False, ingest_token=[TOKEN], api_token=[W.CORPUS_API_TOKEN],
                     read_timeout=READ_TIMEOUT) as s:
        s.db = db
        yield s


def test_the_corpus_is_large_and_covers_every_category():
    cats = {d["category"] for d in CORPUS}
    assert len(CORPUS) >= 300
    assert cats >= {"broken_json", "wrong_types", "huge_numbers", "bad_encoding", "oversized", "header_lies",
                    "wrong_port_and_events", "auth", "content_type", "errors_json",
                    "receive_times"}
    assert len({(d["category"], d["name"]) for d in CORPUS}) == len(CORPUS)


@pytest.mark.parametrize("case", CORPUS, ids=[f"{d['category']}:{d['name']}" for d in CORPUS])
def test_hostile_request_gets_its_precise_answer_and_stores_nothing(live, case):
    before = counts(live.db)
    r = http(case.get("method", "POST"), live.url + case["path"], body_bytes(case["body"]), case["headers"],
             timeout=30)
    assert r.status < 500, r
    assert r.status == case["expect_status"], r
    assert r.headers["Content-Type"].startswith("application/json"), r.headers
    d = r.json()
    if case.get("expect_stored"):  # taken, with the collector's own receive time (docs/api.md)
        assert d["status"] == case["expect_error_contains"], d
        after = counts(live.db)
        assert after["fragments"] == before["fragments"] + 1, (before, after)
        got = http("GET", f"{live.url}/api/messages/{d['message']}", None,
                   {"Authorization": f"Bearer {W.CORPUS_API_TOKEN}"})
        frag = got.json()["fragments"][0]
        assert frag["networkServerTime"] and frag["receivedAt"] >= "1970", frag
        return
    if r.status == 202:
        assert d["status"] == "ignored", d
        assert case["expect_error_contains"] in d["reason"], d
    else:
        assert case["expect_error_contains"] in d["error"], d
        assert "Traceback" not in d["error"]
        if "expect_code" in case:
            assert d["code"] == case["expect_code"], d
    assert counts(live.db) == before
    assert http("GET", live.url + "/healthz").status == 200


# --------------------------------------------------------------------------- slow clients


def _raw(port: int, data: bytes) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port))
    s.sendall(data)
    return s


def _read_all(s: socket.socket, limit: float, until: bytes | None = None) -> tuple[bytes, float | None, float]:
    """Read until the server closes, ``until`` was received, or ``limit`` seconds
    passed: (data, time of the first byte, time of the end)."""
    t0 = time.monotonic()
    s.settimeout(0.2)
    data, first = b"", None
    while time.monotonic() - t0 < limit:
        try:
            chunk = s.recv(4096)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not chunk:
            break
        if first is None:
            first = time.monotonic() - t0
        data += chunk
        if until is not None and until in data:
            break
    return data, first, time.monotonic() - t0


HEAD = (b"POST /uplink HTTP/1.1\r\nHost: collector\r\nAuthorization: Bearer " + TOKEN.encode()
        + b"\r\nContent-Type: application/json\r\nContent-Length: 2000\r\n\r\n")


def test_a_body_that_never_completes_is_answered_408_and_closed(live):
    before = counts(live.db)
    s = _raw(live.port, HEAD + b'{"devEui": "70B3D57ED0C0FFEE", ')
    data, first, _ = _read_all(s, READ_TIMEOUT + 20, until=b"s\"}")
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"did not arrive within 1 s" in data
    # the server closes the connection after it (aiohttp first reads for up to 10 s
    # what the client still sends)
    assert b"Connection: close" in data
    assert first is not None and first < READ_TIMEOUT + 1.5, first
    assert counts(live.db) == before
    assert http("GET", live.url + "/healthz").status == 200


def test_a_trickled_body_is_cut_off_at_the_read_timeout(live):
    s = _raw(live.port, HEAD)
    t0 = time.monotonic()
    answered = b""
    s.settimeout(0.01)
    while time.monotonic() - t0 < READ_TIMEOUT + 5:
        try:
            s.sendall(b" ")  # one byte every 0.25 s: never idle, never done
        except OSError:
            break
        try:
            answered += s.recv(4096)
        except TimeoutError:
            pass
        except OSError:
            break
        if answered:
            break
        time.sleep(0.25)
    s.close()
    assert answered.startswith(b"HTTP/1.1 408"), answered[:200]
    assert time.monotonic() - t0 < READ_TIMEOUT + 2


@pytest.mark.parametrize("prefix", [b"", b"POST /uplink HTTP/1.1\r\nHost: c\r\n", b"POST /upl"])
def test_a_connection_without_a_complete_request_is_closed(live, prefix):
    s = _raw(live.port, prefix)
    data, _first, closed = _read_all(s, READ_TIMEOUT + 20)
    s.close()
    assert closed < READ_TIMEOUT + 3, closed
    assert not data.startswith(b"HTTP/1.1 2"), data[:100]


def test_slow_clients_do_not_block_others(live):
    socks = [_raw(live.port, HEAD + b"{") for _ in range(50)]
    try:
        frag = wire.fragment(3, wire.encode_record(example_record()), 115)[0]
        path, b = uplink_body("generic", AppUplink("70B3D57ED0C0FF01", 16, 1, frag, 1_800_000_000 * 10**9))
        t0 = time.monotonic()
        r = http("POST", live.url + path, b, {"Authorization": f"Bearer {TOKEN}"}, timeout=5)
        assert r.status == 202 and r.json()["status"] == "accepted", r
        assert time.monotonic() - t0 < 1.5
    finally:
        for s in socks:
            s.close()


# --------------------------------------------------------------------------- lies relative to an open message


def _post(live, dev: str, payload: bytes, n: int):
    path, b = uplink_body("ttn", AppUplink(dev, 16, n, payload, (1_800_000_000 + n) * 10**9, dr=3, sf=9))
    r = http("POST", live.url + path, b, {"Authorization": f"Bearer {TOKEN}"})
    assert r.status == 202, r
    return r.json()


@pytest.mark.parametrize("lie", ["index_beyond_count", "longer_than_S", "second_short_last", "conflicting_duplicate"])
def test_header_lies_against_an_open_message_close_it_as_a_conflict_and_are_recorded(live, lie):
    """docs/reassembly.md, choice 3: such a fragment cannot belong to the open
    message, so it closes that message (outcome recorded as for a deadline) and
    starts a new one. Nothing is answered 4xx: each request alone is a valid
    fragment, and refusing it would lose data of a device that restarted."""
    dev = {"index_beyond_count": "70B3D57ED0C0A001", "longer_than_S": "70B3D57ED0C0A002",
           "second_short_last": "70B3D57ED0C0A003", "conflicting_duplicate": "70B3D57ED0C0A004"}[lie]
    frags = wire.fragment(4, wire.encode_record(example_record()), 115)  # 6 fragments, S = 115
    first = _post(live, dev, frags[0], 0)
    _post(live, dev, frags[1], 1)
    assert first["status"] == "accepted" and first["closed"] == []
    liar = {"index_beyond_count": bytes([4, 9]) + b"\x01" * 60,
            "longer_than_S": bytes([4, 2]) + b"\x02" * 150,
            "second_short_last": None,
            "conflicting_duplicate": bytes([4, 1]) + bytes(113)}[lie]
    if liar is None:  # the short last fragment (index 5 of 6), then another short one at index 4
        _post(live, dev, bytes([4, 5]) + b"\x05" * 20, 3)
        liar = bytes([4, 4]) + b"\x04" * 20
    before = counts(live.db)
    r = _post(live, dev, liar, 9)
    assert r["status"] == "accepted"
    assert r["closed"] == [first["message"]] and r["message"] != first["message"]
    after = counts(live.db)
    assert after["fragments"] == before["fragments"] + 1
    old = http("GET", f"{live.url}/api/messages/{first['message']}", None,
               {"Authorization": f"Bearer {W.CORPUS_API_TOKEN}"}).json()
    assert old["closeReason"] == "conflict" and old["state"] in ("partial", "incident")
    assert {f["index"] for f in old["fragments"]} >= {0, 1}


def test_an_unknown_device_is_accepted(live):
    """Decision (docs/operations.md, Security): the network server authenticates
    devices; the collector accepts any DevEUI from an authenticated network server.
    The registry only holds upload tokens."""
    frag = wire.fragment(5, wire.encode_record(example_record()), 115)[0]
    r = _post(live, "0000000000000001", frag, 1)
    assert r["status"] == "accepted"
