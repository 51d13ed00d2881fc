"""Nothing acknowledged is lost: the data-loss cases of hostile testing (issue 12,
items 1-3; the clock steps and the damaged database are in test_clock_and_disk.py),
each against the real service on loopback with a real SQLite file."""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor

from collector.core import wire
from collector.service.ingest_http import INGEST
from collector.service.keys import COMMITTER
from collector.testing.examples import example_record
from collector.testing.harness import LiveService

# loaded by conftest.py (tests/reliability/workloads.py)
W = sys.modules["reliability_workloads"]
message_uplinks = W.message_uplinks
T0 = W.T0


def send_until_acknowledged(live: LiveService, uplinks: list[tuple[str, dict]], burst: int = 32) -> dict:
    """Post in bursts of ``burst`` concurrent requests; a 503 is sent again (as a
    network server or an operator would) until it is acknowledged. Counts by answer."""
    counts: dict[str, int] = {}
    todo = list(uplinks)
    with ThreadPoolExecutor(burst) as pool:
        while todo:
            results = list(pool.map(lambda pb: live.post(*pb), todo))
            again = []
            for pb, r in zip(todo, results, strict=True):
                key = str(r.status) if r.status != 202 else r.json()["status"]
                counts[key] = counts.get(key, 0) + 1
                assert r.status in (202, 503), r
                if r.status == 503:
                    again.append(pb)
            todo = again
    return counts


def test_a_503d_uplink_sent_again_is_stored_not_taken_for_a_duplicate(tmp_path):
    """Item 1: with one pending write allowed, bursts of 32 concurrent uplinks get
    many 503s; each is sent again until acknowledged. After a restart in the middle
    of the messages every message completes: no acknowledged fragment was held only
    in memory."""
    msgs = message_uplinks(12)
    with LiveService(tmp_path / "c.db", max_pending_writes=1, message_timeout=600,
                     deadline_policy="fixed") as live:
        counts = send_until_acknowledged(live, [u for m in msgs for u in m[:-1]])
        assert counts.get("503", 0) >= 10, counts  # the case under test happened
        # a full write queue is seen before the reassembler takes the uplink: no reload needed
        assert live.app[INGEST].guard.resyncs == 0
        live.restart_service()
        send_until_acknowledged(live, [m[-1] for m in msgs])
        live.advance(3600)
        status = live.get("/api/status").json()
    assert status["incidents"] == 0, (status, counts)
    assert status["messages"]["complete"] == len(msgs), (status, counts)


def test_with_http_workers_a_503d_uplink_sent_again_is_stored(tmp_path, workloads):
    """Item 1 through the workers' channel, configured as an operator would
    (``COLLECTOR_MAX_PENDING_WRITES=1``, ``collector serve --workers 2``), stopped
    with SIGTERM in the middle of the messages and started again."""
    from collector.testing.harness import http
    msgs = message_uplinks(12)
    svc = workloads.collector_proc(tmp_path, None, "--workers", "2", "--message-timeout", "3600",
                                   "--deadline-policy", "fixed", env={"COLLECTOR_MAX_PENDING_WRITES": "1"})
    url = workloads.base_url(svc)
    auth = workloads.API

    def post_all(uplinks: list[tuple[str, dict]]) -> dict:
        counts: dict[str, int] = {}
        todo = list(uplinks)
        with ThreadPoolExecutor(32) as pool:
            while todo:
                results = list(pool.map(lambda pb: http("POST", url + pb[0], pb[1], auth), todo))
                again = [pb for pb, r in zip(todo, results, strict=True) if r.status == 503]
                for r in results:
                    assert r.status in (202, 503), r
                    key = str(r.status) if r.status != 202 else r.json()["status"]
                    counts[key] = counts.get(key, 0) + 1
                todo = again
        return counts

    try:
        svc.start()
        counts = post_all([u for m in msgs for u in m[:-1]])
        assert counts.get("503", 0) >= 1, counts
        assert svc.stop() == 0
        svc.start()
        post_all([m[-1] for m in msgs])
        status = http("GET", url + "/api/status", None, auth).json()
    finally:
        svc.stop()
    assert status["incidents"] == 0 and status["messages"]["complete"] == len(msgs), (status, counts)


def _disk_full(live: LiveService, full: bool) -> None:
    """Let the database grow by no page (or lift the limit again): SQLite's own
    "database or disk is full", as on a full disk."""
    def op(c):
        n = c.execute("PRAGMA page_count").fetchone()[0] if full else 1 << 30
        c.execute(f"PRAGMA max_page_count = {int(n)}")
    assert live.app is not None
    live.run(live.app[COMMITTER].submit(op))


def test_an_uplink_whose_commit_fails_on_a_full_disk_is_taken_again(tmp_path):
    """Item 1, the other way a commit fails: after the reassembler took the uplink
    (disk full). The 503'd uplinks are sent again once there is room; after a
    restart every message completes."""
    msgs = message_uplinks(12)
    with LiveService(tmp_path / "c.db", message_timeout=600, deadline_policy="fixed") as live:
        send_until_acknowledged(live, [u for m in msgs for u in m[:2]])
        _disk_full(live, True)
        middle = [u for m in msgs for u in m[2:-1]]
        with ThreadPoolExecutor(8) as pool:
            first = list(pool.map(lambda pb: live.post(*pb), middle))
        refused = [pb for pb, r in zip(middle, first, strict=True) if r.status == 503]
        assert refused, "the full database refused nothing"
        _disk_full(live, False)
        live.run(live.app[INGEST].guard.wait())
        send_until_acknowledged(live, refused)
        live.restart_service()
        send_until_acknowledged(live, [m[-1] for m in msgs])
        live.advance(3600)
        status = live.get("/api/status").json()
    assert status["incidents"] == 0, status
    assert status["messages"]["complete"] == len(msgs), status


GO_ZERO_TIME = "0001-01-01T00:00:00Z"


def test_receive_times_outside_the_documents_range_are_unset():
    from collector.core.timefmt import parse_ms, receive_ms
    assert receive_ms(GO_ZERO_TIME) is None
    assert receive_ms("1969-12-31T23:59:59.999Z") is None
    assert receive_ms("9999-12-31T23:00:00-05:00") is None  # the offset moves it into year 10000
    assert receive_ms("0001-01-01T00:00:00+05:00") is None  # ... and before year 1
    assert receive_ms("2026-11-24T06:00:01.120Z") == parse_ms("2026-11-24T06:00:01.120Z")
    assert receive_ms("1970-01-01T00:00:00Z") == 0


def test_a_fragment_with_go_zero_time_does_not_dead_letter_its_record(tmp_path):
    """Item 2: one fragment carrying Go's zero time as receive time (TTS, ChirpStack
    and the generic format each) takes the collector's own receive time, keeps the
    network server's as metadata, and the record is delivered."""
    msgs = message_uplinks(3)
    field = {"/uplink/ttn": ("uplink_message", "received_at"), "/uplink/chirpstack?event=up": (None, "time"),
             "/uplink": (None, "receivedAt")}
    with LiveService(tmp_path / "c.db", message_timeout=600, deadline_policy="fixed") as live:
        for ups in msgs:
            path, body = ups[1]
            outer, key = field[path]
            (body[outer] if outer else body)[key] = GO_ZERO_TIME
            for pb in ups:
                r = live.post(*pb)
                assert r.status == 202 and r.json()["status"] == "accepted", r
        live.advance(3600)
        status = live.get("/api/status").json()
        docs = live.stub_documents()
        messages = live.get("/api/messages?state=complete").json()["messages"]
        detail = live.get(f"/api/messages/{messages[0]['id']}").json()
    assert status["documents"] == {"pending": 0, "delivered": 3, "dead": 0}, status
    assert status["incidents"] == 0, status
    assert len(docs) == 3 and all('firstReceived="20' in d["xml"] for d in docs), docs
    kept = [f for f in detail["fragments"] if f["networkServerTime"] is not None]
    assert [f["networkServerTime"] for f in kept] == [GO_ZERO_TIME], detail["fragments"]
    assert kept[0]["receivedAt"].startswith("2027-"), kept  # the collector's (manual) clock: 2027-01-15


def test_a_document_that_fails_the_xsd_becomes_an_incident_not_a_dead_letter():
    """Item 2's second half: whatever slips past ingest, a document the Web App would
    refuse on every attempt is never stored for delivery: the outcome is an incident."""
    from collector.core.assemble import assemble, reject_invalid
    from collector.core.reassembly import Reassembler
    from collector.core.uplink import Uplink
    frags = wire.fragment(3, wire.encode_record(example_record()), 115)
    r = Reassembler()
    for f in frags:
        res = r.feed(Uplink("70B3D5000000AAAA", 16, f, T0 * 1000), 100.0)
    good = assemble(res.closed[0])
    assert reject_invalid(good) is good and good.state == "complete"
    bad = assemble(res.closed[0])
    assert bad.xml is not None
    bad.xml = bad.xml.replace(b'firstReceived="2027', b'firstReceived="27')  # a year the XSD refuses
    out = reject_invalid(bad)
    assert out.state == "incident" and out.code == "invalid_document", out
    assert out.xml is None and "XSD" in (out.detail or ""), out.detail


# --------------------------------------------------------------------------- item 3


def _run_cli(*args: str) -> tuple[int, str]:
    from click.testing import CliRunner

    from collector.cli.main import cli
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.output


def test_settings_that_cannot_make_a_request_are_refused_where_they_are_made(tmp_path):
    """Item 3: credentials in webapp_url and CR/LF in a token are refused at start and
    by ``collector devices``, with one line that names the setting."""
    db = str(tmp_path / "c.db")
    base = ["serve", "--db", db, "--ingest-token", "t", "--port", "0"]
    for extra, words in ((["--webapp-url", "http://user:pw@127.0.0.1:1"], "must not carry credentials"),
                         (["--webapp-url", "http://127.0.0.1:1", "--webapp-token", "ab\r\nX-Evil: 1"], "carriage return"),
                         (["--webapp-url", "http://127.0.0.1:1\r\n"], "control character")):
        code, out = _run_cli(*base, *extra)
        assert code != 0 and words in out and "Traceback" not in out, out
        assert "pw" not in out.replace("webapp_url", ""), out  # the password is not echoed
    code, out = _run_cli("devices", "--db", db, "add", "70B3D57ED005A1B2", "--token", "abc\ndef")
    assert code == 1 and "line feed" in out and "Traceback" not in out, out
    reg = tmp_path / "devices.csv"
    reg.write_text('dev_eui,token\n70B3D57ED005A1B2,"ab\rcd"\n')
    code, out = _run_cli("devices", "--db", db, "import", str(reg))
    assert code == 1 and "token contains" in out and "cannot be sent" in out, out
    assert not (tmp_path / "c.db").exists()  # nothing was registered (nor a database made)
    code, out = _run_cli(*base, "--devices-file", str(reg))  # the same file given to the service
    assert code == 1 and "devices_file" in out and "cannot be sent" in out and "Traceback" not in out, out


def test_a_document_whose_request_cannot_be_built_is_dead_lettered_once(tmp_path):
    """Item 3: a device token with CR/LF already in the registry (written before the
    check existed) made the delivery loop spin on an exception, the document neither
    sent nor dead-lettered. It is dead-lettered at its first attempt, saying why."""
    from collector.service.store import op_device
    (ups,) = message_uplinks(1)
    dev = ups[0][1]["end_device_ids"]["dev_eui"]
    with LiveService(tmp_path / "c.db", message_timeout=600, deadline_policy="fixed") as live:
        live.run(live.app[COMMITTER].submit(op_device(dev, "tok\r\nX-Injected: 1", None, 0.0)))
        for pb in ups:
            assert live.post(*pb).status == 202
        live.advance(3600)
        live.advance(10)
        status = live.get("/api/status").json()
        dead = live.get("/api/deadletters").json()["deadletters"]
        requests = live.stub_requests()
    assert status["documents"]["dead"] == 1, status
    assert dead[0]["attempts"] == 1 and "cannot be built" in dead[0]["deadReason"], dead
    assert "carriage return" in dead[0]["deadReason"] and "X-Injected" not in dead[0]["deadReason"], dead
    assert requests == [], requests
