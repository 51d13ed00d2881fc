"""Web App faults on a virtual clock, beyond tests/collector/test_delivery_webapp.py
(which covers one flapping document, 429 + Retry-After, a 4xx dead letter and its
retry by command, max age, connection refused, the circuit, the login refresh):
an hour-long outage with many documents and the request count it causes, 30 %
5xx, slow answers around the client timeout, and a storm of every fault after
which each document is delivered exactly once or dead-lettered with its reason."""

from __future__ import annotations

import math

from click.testing import CliRunner

from collector.cli.main import cli
from collector.core import wire
from collector.service.keys import CFG
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, http
from devicesim.formats import AppUplink, uplink_body


def send_messages(s: LiveService, n: int, first: int = 0) -> list[str]:
    """``n`` complete messages (distinct records, 3 fragments each); their uids."""
    uids = []
    for j in range(first, first + n):
        rec = example_record()
        rec.record_seq = j
        dev = f"70B3D5AA{j // 200:08X}"
        frags = wire.fragment(j % 200, wire.encode_record(rec), 242)
        for i, f in enumerate(frags):
            r = s.post(*uplink_body("generic", AppUplink(dev, 16, j * 8 + i, f, (1_800_000_000 + j) * 10**9)))
            assert r.status == 202, r
        uids.append(r.json()["closed"][0])
    return uids


def docs(s: LiveService) -> dict[str, dict]:
    return {d["id"]: d for d in (s.get(f"/api/messages/{u}").json()["document"] for u in s.uids)}


def assert_each_delivered_once(s: LiveService) -> None:
    keys = [d["idempotencyKey"] for d in s.stub_documents()]
    assert len(keys) == len(set(keys)) == len(s.uids)
    assert all(d["state"] == "delivered" for d in docs(s).values())


def test_an_hour_long_outage_keeps_the_request_rate_bounded_then_delivers_everything(tmp_path):
    # default delivery policy: base 2 s, cap 3600 s, circuit 5 failures / 30 s, 4 in flight
    with LiveService(tmp_path / "c.db") as s:
        cfg = s.app[CFG]
        s.set_faults(outage=True)
        s.uids = send_messages(s, 40)
        step, hour = 10.0, 3600.0
        per_window: list[int] = []
        n0 = 0
        for k in range(int(hour / step)):
            s.advance(step)
            if (k + 1) % 30 == 0:  # every 5 virtual minutes
                n = len(s.stub_requests())
                per_window.append(n - n0)
                n0 = n
        during = len(s.stub_requests())
        # the circuit lets through what was in flight when it opened, then one probe per reset period
        bound = cfg.circuit_threshold + cfg.delivery_concurrency + math.ceil(hour / cfg.circuit_reset) + 1
        assert during <= bound, (during, bound)
        # without the circuit, 40 documents backing off on their own would have made
        # several hundred requests: the bound is the circuit's doing
        assert bound < 40 * 5
        assert max(per_window[1:]) <= math.ceil(300 / cfg.circuit_reset) + 1, per_window
        assert all(st == 503 for st in (r["status"] for r in s.stub_requests()))
        assert s.get("/healthz").json()["circuit"] == "open"
        s.set_faults(outage=False)
        for _ in range(400):
            if all(d["state"] == "delivered" for d in docs(s).values()):
                break
            s.advance(step)
        assert_each_delivered_once(s)
        assert s.get("/healthz").json()["circuit"] == "closed"


def test_thirty_percent_5xx_delivers_everything_exactly_once(tmp_path):
    with LiveService(tmp_path / "c.db", stub_faults=None, backoff_base=5.0, backoff_cap=60.0) as s:
        s.set_faults(error_rate=0.3, error_status=502)
        s.uids = send_messages(s, 30)
        for _ in range(200):
            if all(d["state"] == "delivered" for d in docs(s).values()):
                break
            s.advance(5)
        assert_each_delivered_once(s)
        statuses = [r["status"] for r in s.stub_requests()]
        assert statuses.count(502) >= 5 and statuses.count(201) == 30
        retried = [d for d in docs(s).values() if d["attempts"] > 1]
        assert retried and all(a["status"] in (502, 201) for d in retried for a in d["attemptLog"])


def test_slow_answers_under_the_timeout_deliver_and_over_it_retry_without_duplicates(tmp_path):
    timeout = 1.0
    with LiveService(tmp_path / "c.db", request_timeout=timeout, backoff_base=5.0, backoff_cap=20.0) as s:
        s.set_faults(latency=0.7 * timeout)
        s.uids = send_messages(s, 2)
        s.advance(0)
        assert all(d["state"] == "delivered" and d["attempts"] == 1 for d in docs(s).values())
        s.set_faults(latency=1.5 * timeout)
        s.uids += send_messages(s, 2, first=2)
        s.advance(0)
        slow = [docs(s)[u] for u in s.uids[2:]]
        assert all(d["state"] == "pending" and "timed out" in d["lastError"] for d in slow), slow
        s.set_faults(latency=0.0)
        for _ in range(20):
            if all(d["state"] == "delivered" for d in docs(s).values()):
                break
            s.advance(5)
        assert_each_delivered_once(s)
        # the Web App stored the timed-out uploads anyway: the retry was answered 409
        assert [r["status"] for r in s.stub_requests()].count(409) <= 2


def test_a_storm_of_every_fault_ends_each_document_delivered_or_dead_with_its_reason(tmp_path):
    db = tmp_path / "c.db"
    with LiveService(db, stub_users={"collector": "pw"}, webapp_token="", webapp_username="collector",
                     webapp_password="pw", backoff_base=5.0, backoff_cap=120.0, max_age=4 * 3600.0,
                     request_timeout=1.0, circuit_threshold=5, circuit_reset=30.0) as s:
        phases = [
            ({"error_rate": 0.3}, 8),
            ({"error_rate": 0.0, "throttle_next": 6, "retry_after": 45}, 6),
            ({"outage": True}, 6),
            ({"outage": False, "latency": 1.3}, 4),
            ({"latency": 0.0, "reject_status": 400}, 5),  # cannot be fixed by retrying
            ({"reject_status": None}, 6),
        ]
        s.uids = []
        rejected: list[str] = []
        for faults, n in phases:
            s.set_faults(**faults)
            if faults.get("reject_status") is None and "reject_status" in faults:
                http("POST", s.stub_url + "/stub/expire-tokens")  # the login token stops working: 401, re-login
            new = send_messages(s, n, first=len(s.uids))
            s.uids += new
            s.advance(0)
            if faults.get("reject_status") == 400:
                rejected = new
            for _ in range(12):
                s.advance(10)
        s.set_faults(error_rate=0.0, outage=False, latency=0.0, reject_status=None)
        for _ in range(200):
            if all(d["state"] in ("delivered", "dead") for d in docs(s).values()):
                break
            s.advance(10)
        final = docs(s)
        assert all(d["state"] in ("delivered", "dead") for d in final.values()), \
            {u: d["state"] for u, d in final.items()}
        dead = {u for u, d in final.items() if d["state"] == "dead"}
        # documents still being retried from earlier phases when the 400s came are dead letters too
        assert set(rejected) <= dead
        for u in dead:
            d = s.get(f"/api/deadletters/{u}").json()
            assert d["deadReason"] == "the Web App answered 400" and d["lastStatus"] == 400
            assert "rejected with 400" in d["lastResponse"]
        statuses = {r["status"] for r in s.stub_requests()}
        assert {201, 400, 401, 429, 503, 500} <= statuses, statuses
        # the dead letters, retried by the operator's command once the Web App is fixed
        r = CliRunner().invoke(cli, ["deadletters", "--db", str(db), "retry", "--all"])
        assert r.exit_code == 0 and f"queued {len(dead)}" in r.output, r.output
        for _ in range(20):
            if all(d["state"] == "delivered" for d in docs(s).values()):
                break
            s.advance(5)
        assert_each_delivered_once(s)
        assert s.get("/api/deadletters").json()["deadletters"] == []
