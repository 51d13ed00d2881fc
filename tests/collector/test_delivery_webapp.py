"""Delivery against the stand-in Web App with faults: retries, backoff, Retry-After,
circuit, dead letters and their retry by command, the login flow, idempotency."""

from __future__ import annotations

import json

from click.testing import CliRunner

from collector.cli.main import cli
from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, http
from devicesim.formats import AppUplink, uplink_body

DEV = "70B3D57ED005A1B2"
T0_NS = 1_800_000_000 * 10**9


def send_message(s: LiveService, msg_id: int = 1, seq: int | None = None) -> str:
    rec = example_record()
    if seq is not None:
        rec.record_seq = seq
    frags = wire.fragment(msg_id, wire.encode_record(rec), 115)
    answers = s.post_uplinks(uplink_body("generic", AppUplink(DEV, 16, i, f, T0_NS + i * 10**9, dr=3, sf=9))
                             for i, f in enumerate(frags))
    assert answers[-1].json()["closed"], answers[-1]
    return answers[-1].json()["closed"][0]


def document(s: LiveService, uid: str) -> dict:
    return s.get(f"/api/messages/{uid}").json()["document"]


SETTINGS = dict(backoff_base=10.0, backoff_cap=80.0, max_age=600.0, circuit_threshold=100)


def test_flapping_web_app_is_retried_with_backoff_until_delivered(tmp_path):
    with LiveService(tmp_path / "c.db", **SETTINGS) as s:
        s.set_faults(fail_next=2)
        uid = send_message(s)
        s.advance(0)
        d = document(s, uid)
        assert d["state"] == "pending" and d["attempts"] == 1 and d["lastStatus"] == 500
        for _ in range(20):
            if document(s, uid)["state"] == "delivered":
                break
            s.advance(10)
        d = document(s, uid)
        assert d["state"] == "delivered"
        assert [a["status"] for a in d["attemptLog"]] == [500, 500, 201]
        assert [r["status"] for r in s.stub_requests()] == [500, 500, 201]


def test_429_retry_after_is_honoured(tmp_path):
    with LiveService(tmp_path / "c.db", **SETTINGS) as s:
        s.set_faults(throttle_next=1, retry_after=120)
        uid = send_message(s)
        s.advance(0)
        d = document(s, uid)
        assert d["lastStatus"] == 429
        s.advance(119)
        assert document(s, uid)["attempts"] == 1  # not before Retry-After
        s.advance(1)
        assert document(s, uid)["state"] == "delivered"


def test_4xx_dead_letters_at_once_keeping_the_response_then_retry_by_command(tmp_path):
    db = tmp_path / "c.db"
    with LiveService(db, **SETTINGS) as s:
        s.set_faults(reject_status=403)
        uid = send_message(s)
        s.advance(0)
        (dl,) = s.get("/api/deadletters").json()["deadletters"]
        assert dl["id"] == uid and dl["lastStatus"] == 403 and "403" in dl["deadReason"]
        assert "rejected with 403" in dl["lastResponse"]
        full = s.get(f"/api/deadletters/{uid}").json()
        assert full["xml"].startswith("<?xml") and len(full["attemptLog"]) == 1
        # the CLI sees the same database while the service runs
        r = CliRunner().invoke(cli, ["deadletters", "--db", str(db), "list"])
        assert r.exit_code == 0 and uid in r.output
        r = CliRunner().invoke(cli, ["deadletters", "--db", str(db), "show", uid])
        assert r.exit_code == 0 and json.loads(r.output)["lastStatus"] == 403
        s.set_faults(reject_status=None)
        r = CliRunner().invoke(cli, ["deadletters", "--db", str(db), "retry", uid])
        assert r.exit_code == 0 and "queued 1" in r.output
        s.advance(1)
        assert document(s, uid)["state"] == "delivered"
        assert s.get("/api/deadletters").json()["deadletters"] == []
        assert len(s.stub_documents()) == 1


def test_web_app_down_until_max_age_then_dead_letter_and_api_retry(tmp_path):
    with LiveService(tmp_path / "c.db", **SETTINGS) as s:
        s.set_faults(outage=True)
        uid = send_message(s)
        for _ in range(15):
            s.advance(50)
        d = document(s, uid)
        assert d["state"] == "dead" and "maximum age" in d["deadReason"] and d["lastStatus"] == 503
        times = [a["at"] for a in d["attemptLog"]]
        assert 3 <= len(times) <= 40
        s.set_faults(outage=False)
        r = s.post(f"/api/deadletters/{uid}/retry", {})
        assert r.status == 202
        s.advance(1)
        assert document(s, uid)["state"] == "delivered"


def test_connection_refused_is_retried(tmp_path):
    with LiveService(tmp_path / "c.db", stub=False, webapp_url="http://127.0.0.1:9", **SETTINGS) as s:
        uid = send_message(s)
        s.advance(0)
        d = document(s, uid)
        assert d["state"] == "pending" and d["lastStatus"] is None and "Connect" in d["lastError"]


def test_circuit_opens_and_stops_hammering(tmp_path):
    with LiveService(tmp_path / "c.db", backoff_base=1.0, backoff_cap=2.0, circuit_threshold=3,
                     circuit_reset=300) as s:
        s.set_faults(outage=True)
        for i in range(3):
            send_message(s, msg_id=i, seq=i)
        for _ in range(10):
            s.advance(5)
        n = len(s.stub_requests())
        assert s.get("/healthz").json()["circuit"] == "open"
        for _ in range(10):
            s.advance(5)
        assert len(s.stub_requests()) == n  # nothing sent while the circuit is open
        s.set_faults(outage=False)
        s.advance(300)
        for _ in range(5):
            s.advance(3)
        assert len(s.stub_documents()) == 3
        assert s.get("/healthz").json()["circuit"] == "closed"


def test_login_flow_and_refresh_on_401(tmp_path):
    with LiveService(tmp_path / "c.db", stub_users={"collector": "pw"}, webapp_token="",
                     webapp_username="collector", webapp_password="pw", **SETTINGS) as s:
        send_message(s, 1, seq=1)
        s.advance(0)
        assert http("POST", s.stub_url + "/stub/expire-tokens").json()["expired"] == 1
        send_message(s, 2, seq=2)
        s.advance(0)
        docs = s.stub_documents()
        assert len(docs) == 2 and docs[0]["token"] != docs[1]["token"]
        assert [r["status"] for r in s.stub_requests()] == [201, 401, 201]


def test_a_document_the_web_app_already_has_counts_as_delivered(tmp_path):
    with LiveService(tmp_path / "c.db", **SETTINGS) as s:
        a = send_message(s, msg_id=1)
        b = send_message(s, msg_id=2)  # the same record again (a device that resent it)
        s.advance(0)
        assert document(s, a)["state"] == document(s, b)["state"] == "delivered"
        assert sorted(r["status"] for r in s.stub_requests()) == [201, 409]
        assert len(s.stub_documents()) == 1
