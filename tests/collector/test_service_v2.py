"""Wire format v2 through the running service over real HTTP: every ingest format,
rebuilt from parity, polls answered with what is held, the bad inputs of
wire-format-v2.md §5 answered 400 with nothing stored, open v2 messages across a
restart."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collector.core import wire, wire2
from collector.core.timefmt import format_ms
from collector.service.config import ServiceConfig
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, free_port, http, wait_until
from devicesim.formats import AppUplink, uplink_body

DATA = wire.encode_record(example_record())
T0_NS = 1_800_000_000 * 10**9


def v2(msg_id: int, parity: int = 2, size: int = 115) -> list[bytes]:
    return wire2.encode_message(DATA, msg_id, size, parity)  # k = 6 at S = 115


def body(fmt: str, payload: bytes, dev: str, i: int = 0) -> tuple[str, dict]:
    return uplink_body(fmt, AppUplink(dev, 17, 100 + i, payload, T0_NS + i * 10**9, dr=3, sf=9, uid=i))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveService(tmp_path_factory.mktemp("v2") / "c.db", stub=False) as s:
        yield s


@pytest.mark.parametrize("fmt", ["ttn", "chirpstack", "generic"])
def test_each_format_rebuilds_from_parity_and_answers_polls(live, fmt):
    dev = {"ttn": "00000000000002A1", "chirpstack": "00000000000002A2", "generic": "00000000000002A3"}[fmt]
    frags = v2(5)
    poll = wire2.poll(5, 6, 8)
    first = live.post(*body(fmt, frags[2], dev, 0)).json()
    assert first["status"] == "accepted"
    ans = live.post(*body(fmt, poll, dev, 1))
    assert ans.status == 202
    assert ans.json() == {"status": "poll", "message": first["message"], "held": 1, "need": 5, "rebuilt": False}
    # data chunks 0 and 1 lost: the two parity rows make up for them
    answers = live.post_uplinks(body(fmt, f, dev, 2 + i) for i, f in enumerate(frags[3:]))
    assert [a.json()["status"] for a in answers] == ["accepted"] * 5
    assert answers[-1].json()["closed"] == [first["message"]]
    assert live.post(*body(fmt, poll, dev, 9)).json()["rebuilt"] is True
    live.advance(0)  # let the aggregator record the outcome
    (m,) = live.get(f"/api/messages?device={dev}").json()["messages"]
    assert (m["msgId"], m["state"], m["fragmentsExpected"], m["fragmentsReceived"]) == (5, "complete", 6, 6)


@pytest.mark.parametrize("payload,reason", [
    ("05000002 0102", "k is 0"),
    ("0500ff02 0102", "k is 255"),
    ("05ff0606 00", "exactly 4 bytes"),
    ("05000600", "at least 5"),
    ("0500066f " + "00" * 111, "pad 111 is not below the chunk length 111"),
])
def test_bad_v2_inputs_are_answered_400_and_nothing_is_stored(live, payload, reason):
    dev = "00000000000002B1"
    r = live.post(*body("generic", bytes.fromhex(payload), dev))
    assert r.status == 400 and reason in r.json()["error"]
    assert live.get(f"/api/messages?device={dev}").json()["messages"] == []


def test_an_open_v2_message_survives_a_restart(tmp_path):
    dev = "00000000000002C1"
    frags = v2(7, parity=1)
    with LiveService(tmp_path / "c.db", stub=False) as s:
        uid = s.post(*body("ttn", frags[0], dev, 0)).json()["message"]
        s.post_uplinks(body("ttn", f, dev, i) for i, f in enumerate(frags[1:4], 1))
        s.restart_service()
        assert s.post(*body("ttn", frags[1], dev, 9)).json()["status"] == "duplicate"
        assert s.post(*body("ttn", wire2.poll(7, 6, 7), dev, 10)).json()["held"] == 4
        last = s.post_uplinks(body("ttn", f, dev, 11 + i) for i, f in enumerate(frags[5:]))
        assert last[-1].json()["closed"] == [uid]
        s.advance(0)
        (m,) = s.get(f"/api/messages?device={dev}").json()["messages"]
        assert (m["state"], m["fragmentsReceived"]) == ("complete", 6)


def test_the_v1_port_cannot_be_the_v2_port():
    with pytest.raises(ValueError, match="fport 17 is wire format v2's port"):
        ServiceConfig(fport=17).validate()


def test_kill_9_keeps_an_open_v2_message_and_its_poll_moved_deadline(tmp_path):
    port = free_port()
    serve = [sys.executable, "-m", "collector", "serve", "--port", str(port), "--db", str(tmp_path / "c.db"),
             "--ingest-token", "k9", "--api-token", "k9", "--deadline-policy", "fixed", "--message-timeout", "3600",
             "--clock", "manual", "--clock-start", "1800000000"]
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": "Bearer k9"}
    dev, frags = "00000000000002D1", v2(8, parity=2)

    def run() -> subprocess.Popen:
        p = subprocess.Popen(serve, stdout=(tmp_path / "c.log").open("ab"), stderr=subprocess.STDOUT)
        wait_until(lambda: p.poll() is None and http("GET", url + "/healthz", timeout=2).status == 200,
                   what="the collector to listen")
        return p

    def post(payload: bytes, i: int) -> dict:
        r = http("POST", url + "/uplink", body("generic", payload, dev, i)[1], auth)
        assert r.status == 202, r
        return r.json()

    p = run()
    try:
        uid = post(frags[0], 0)["message"]
        for i in (1, 2, 6):  # data 0-2 and parity row 0: 4 of 6
            post(frags[i], i)
        assert http("POST", url + "/admin/clock", {"advance": 1000}, auth).status == 200
        # the poll starts a repair round: the deadline moves to poll time + timeout
        assert post(wire2.poll(8, 6, 8), 9)["need"] == 2
        p.kill()
        p.wait(timeout=10)
        p = run()
        (m,) = http("GET", url + f"/api/messages?device={dev}", None, auth).json()["messages"]
        assert (m["id"], m["state"], m["fragmentsReceived"]) == (uid, "open", 4)
        assert m["deadline"] == format_ms((1_800_000_000 + 1000 + 3600) * 1000)
        assert post(frags[6], 10)["status"] == "duplicate"
        assert post(frags[7], 11)["status"] == "accepted"
        assert post(frags[5], 12)["closed"] == [uid]  # 6 of 6: rebuilt
    finally:
        p.kill()
        p.wait(timeout=10)


def test_a_message_held_for_its_repair_round_and_its_release_survive_restarts(tmp_path):
    """docs/repair.md, "The deadline follows the repair state": a polled v2 message
    stays open past its adaptive deadline while the device keeps it; the hold, and
    its release once 4 newer msg_ids came, are committed with the uplinks and come
    back after a restart."""
    dev, frags = "00000000000002C2", v2(20, parity=1)
    hold_until = format_ms((1_800_000_000 + 21600) * 1000)

    def state(s: LiveService, uid: str) -> dict:
        (m,) = [m for m in s.get(f"/api/messages?device={dev}").json()["messages"] if m["id"] == uid]
        return m

    with LiveService(tmp_path / "c.db", stub=False, downlink_url="http://127.0.0.1:9/downlink") as s:
        uid = s.post(*body("generic", frags[0], dev, 0)).json()["message"]
        s.post_uplinks(body("generic", f, dev, i) for i, f in enumerate(frags[1:4], 1))
        assert s.post(*body("generic", wire2.poll(20, 6, 7), dev, 9)).json()["need"] == 2
        assert state(s, uid)["deadline"] == hold_until
        s.restart_service()
        s.advance(5000)  # far past the adaptive deadline (about 15 minutes at SF9)
        assert (state(s, uid)["state"], state(s, uid)["deadline"]) == ("open", hold_until)
        for n, msg_id in enumerate((21, 22, 23)):  # the device's next records: still kept
            s.post(*body("generic", v2(msg_id)[0], dev, 10 + n))
        s.restart_service()
        s.advance(0)
        assert state(s, uid)["state"] == "open"
        s.post(*body("generic", v2(24)[0], dev, 20))  # the fifth message: the device evicted 20
        s.advance(0)
        assert state(s, uid)["state"] != "open"
    # the release before its deadline passed, then a restart: it closes at that deadline
    dev, frags = "00000000000002C3", v2(30, parity=1)
    with LiveService(tmp_path / "d.db", stub=False, downlink_url="http://127.0.0.1:9/downlink") as s:
        uid = s.post(*body("generic", frags[0], dev, 0)).json()["message"]
        s.post_uplinks(body("generic", f, dev, i) for i, f in enumerate(frags[1:4], 1))
        s.post(*body("generic", wire2.poll(30, 6, 7), dev, 9))
        for n, msg_id in enumerate((31, 32, 33, 34)):
            s.post(*body("generic", v2(msg_id)[0], dev, 10 + n))
        released = state(s, uid)["deadline"]
        assert released < hold_until
        s.restart_service()
        assert (state(s, uid)["state"], state(s, uid)["deadline"]) == ("open", released)
        s.advance(5000)
        assert state(s, uid)["state"] != "open"


def test_late_rows_of_a_rebuilt_message_after_the_duplicate_window_and_a_restart(tmp_path):
    """The v2 sweep's duplicate delivery, through the service: a message rebuilt from
    a parity row whose ACK the device never got; its NEED rows come more than the
    1 h duplicate window later, after a restart. They are duplicates of the rebuilt
    message (the device still holds it) and the poll is answered ACK: no second
    message opens, so the record is not rebuilt and delivered twice."""
    dev, frags = "00000000000002C4", v2(40, parity=7)  # k = 6, rows at indices 6..12
    with LiveService(tmp_path / "c.db", stub=False) as s:
        uid = s.post(*body("generic", frags[0], dev, 0)).json()["message"]
        s.post_uplinks(body("generic", f, dev, i) for i, f in enumerate(frags[1:5], 1))  # data chunk 5 lost
        assert s.post(*body("generic", frags[6], dev, 6)).json()["closed"] == [uid]  # rebuilt
        s.advance(5000)
        s.restart_service()  # what a restart loads back includes it
        late = s.post_uplinks(body("generic", f, dev, 10 + i) for i, f in enumerate(frags[7:13]))
        assert [r.json()["status"] for r in late] == ["duplicate"] * 6  # k rows: before, a second rebuild
        assert s.post(*body("generic", wire2.poll(40, 6, 13), dev, 20)).json()["need"] == 0
        s.advance(0)
        assert [m["id"] for m in s.get(f"/api/messages?device={dev}").json()["messages"]] == [uid]
