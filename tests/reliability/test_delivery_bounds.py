"""Issue 12, items 6, 7, 8, 18 (stored answers) and 19 (delivery): what a hostile or
broken Web App, or a failing disk, can make delivery do is bounded.

The Web App here is a real aiohttp server on loopback whose answers each test
sets: a Retry-After of a year, an endless error page, an error page that echoes
the request's headers. The disk failing is a real SQLite failure (a trigger that
aborts every write of an attempt), not a stand-in for the store."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from aiohttp import web

from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import WEBAPP_TOKEN, LiveService, wait_until
from devicesim.formats import AppUplink, uplink_body

pytestmark = pytest.mark.timeout(120)


class HostileWebApp:
    """Answers uploads from a script: each entry is used once, the last one forever."""

    def __init__(self, script: list[dict]):
        self.script = script
        self.requests: list[dict] = []
        self.bytes_sent = 0

    async def upload(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        self.requests.append(dict(request.headers))
        step = self.script[0] if len(self.script) == 1 else self.script.pop(0)
        if step.get("endless"):
            resp = web.StreamResponse(status=step["status"])
            await resp.prepare(request)
            chunk = b"<html>" + b"x" * 65530
            try:
                while True:  # until the client goes away
                    await resp.write(chunk)
                    self.bytes_sent += len(chunk)
            except (ConnectionError, RuntimeError):
                return resp
        body = step.get("body", "")
        if step.get("echo"):
            body += "".join(f"{k}: {v}\n" for k, v in request.headers.items())
        return web.Response(status=step["status"], text=body, headers=step.get("headers"))

    async def start(self) -> tuple[web.AppRunner, int]:
        app = web.Application()
        app.router.add_post("/api/measurements/upload/", self.upload)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        return runner, site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]


def _service(tmp_path: Path, webapp: HostileWebApp, **settings) -> LiveService:
    s = LiveService(tmp_path / "c.db", stub=False, webapp_url="", **settings)
    s.thread.start()
    runner, port = s.run(webapp.start())
    s._runners.append(runner)
    s.webapp_url = f"http://127.0.0.1:{port}"
    s.run(s._start())
    return s


def _send_record(s: LiveService, seq: int = 1) -> str:
    rec = example_record()
    rec.record_seq = seq
    frags = wire.fragment(seq % 200, wire.encode_record(rec), 242)
    for i, f in enumerate(frags):
        r = s.post(*uplink_body("generic", AppUplink("70B3D5AA00000001", 16, seq * 8 + i, f,
                                                     (1_800_000_000 + seq) * 10**9)))
        assert r.status == 202, r
    return r.json()["closed"][0]


def _document(s: LiveService, uid: str) -> dict:
    return s.get(f"/api/messages/{uid}").json()["document"]


@pytest.mark.parametrize("retry_after", ["31536000", "Fri, 01 Jan 2100 00:00:00 GMT"])
def test_a_retry_after_of_a_year_is_cut_to_max_retry_after(tmp_path, retry_after):
    app = HostileWebApp([{"status": 503, "headers": {"Retry-After": retry_after}}, {"status": 201}])
    s = _service(tmp_path, app)
    try:
        uid = _send_record(s)
        wait_until(lambda: len(app.requests) == 1, 30, "the first upload")
        wait_until(lambda: _document(s, uid)["attempts"] == 1, 30, "the first attempt recorded")
        s.advance(3600 + 1)  # the default cap; the circuit held no longer either
        wait_until(lambda: _document(s, uid)["state"] == "delivered", 30, "delivery after the capped wait")
        assert len(app.requests) == 2
    finally:
        s.stop()


def test_max_retry_after_is_configurable(tmp_path):
    app = HostileWebApp([{"status": 429, "headers": {"Retry-After": "86400"}}, {"status": 201}])
    s = _service(tmp_path, app, max_retry_after=60)
    try:
        uid = _send_record(s)
        wait_until(lambda: _document(s, uid)["attempts"] == 1, 30, "the first attempt recorded")
        s.advance(61)
        wait_until(lambda: _document(s, uid)["state"] == "delivered", 30, "delivery after 60 s")
    finally:
        s.stop()


def test_an_endless_error_page_is_read_only_as_far_as_it_is_kept(tmp_path):
    """A Web App streaming an error page without end: the collector keeps its first
    2,000 bytes, closes the connection and dead-letters the document at once (it used
    to read the whole answer into memory: 400 MB took it to 1.2 GB)."""
    app = HostileWebApp([{"status": 400, "endless": True}])
    s = _service(tmp_path, app, request_timeout=60)
    try:
        uid = _send_record(s)
        doc = wait_until(lambda: (d := _document(s, uid))["state"] == "dead" and d, 50, "the dead letter")
        assert doc["lastStatus"] == 400 and doc["lastResponse"].startswith("<html>xxx")
        assert len(doc["lastResponse"]) <= 2000
        assert app.bytes_sent < 50 * 2**20  # what the kernel buffers, not what the page holds
    finally:
        s.stop()


def test_secrets_echoed_by_the_web_app_are_not_stored(tmp_path):
    app = HostileWebApp([{"status": 400, "echo": True, "body": "bad request; you sent:\n"}])
    s = _service(tmp_path, app)
    try:
        uid = _send_record(s)
        doc = wait_until(lambda: (d := _document(s, uid))["state"] == "dead" and d, 30, "the dead letter")
        assert "Authorization: Token ***" in doc["lastResponse"], doc["lastResponse"]
        assert app.requests[0]["Authorization"] == f"Token {WEBAPP_TOKEN}"
        assert WEBAPP_TOKEN not in str(s.get(f"/api/messages/{uid}").json())
        assert WEBAPP_TOKEN not in str(s.get(f"/api/deadletters/{uid}").json())
        for f in Path(s.settings["db"]).parent.glob("c.db*"):  # the database, its WAL
            assert WEBAPP_TOKEN.encode() not in f.read_bytes(), f
    finally:
        s.stop()


def test_a_dead_letter_is_an_error_and_counted_by_cause(tmp_path, caplog):
    app = HostileWebApp([{"status": 503}, {"status": 422, "body": "no"}])
    s = _service(tmp_path, app)
    try:
        with caplog.at_level("INFO", logger="collector.delivery"):
            uid = _send_record(s)
            wait_until(lambda: _document(s, uid)["attempts"] == 1, 30, "the first attempt recorded")
            s.advance(10)
            wait_until(lambda: _document(s, uid)["state"] == "dead", 30, "the dead letter")
        levels = {r.getMessage().split()[0]: r.levelname for r in caplog.records
                  if r.name == "collector.delivery"}
        assert levels == {"event=delivery": "INFO", "event=dead_letter": "ERROR"}, levels
        metrics = s.get("/metrics").body.decode()
        assert 'collector_data_loss_total{cause="rejected",kind="dead_letter"} 1.0' in metrics
    finally:
        s.stop()


def test_a_delivered_document_whose_outcome_cannot_be_written_is_not_uploaded_again(tmp_path):
    """The disk fails (every attempt row is refused) after the Web App took the
    document: the outcome is kept and written again with back-off, and the document is
    not uploaded again meanwhile (it used to be re-sent in a tight loop, thousands of
    409s). Once the store takes writes again the outcome is recorded."""
    app = HostileWebApp([{"status": 201}])
    s = _service(tmp_path, app)
    db = s.settings["db"]
    try:
        with sqlite3.connect(db) as c:
            c.execute("CREATE TRIGGER disk_full BEFORE INSERT ON attempts "
                      "BEGIN SELECT RAISE(ABORT, 'database or disk is full'); END")
        uid = _send_record(s)
        wait_until(lambda: len(app.requests) == 1, 30, "the upload")
        for _ in range(5):  # each tick delivers whatever is due now
            s.advance(1)
        assert len(app.requests) == 1
        assert _document(s, uid)["state"] == "pending"
        with sqlite3.connect(db) as c:
            c.execute("DROP TRIGGER disk_full")
        wait_until(lambda: _document(s, uid)["state"] == "delivered", 90, "the outcome recorded")
        assert len(app.requests) == 1
    finally:
        s.stop()


def test_an_incident_is_a_warning_and_counted_a_complete_record_is_info(tmp_path, caplog):
    """Issue 12, item 19: data loss is logged at warning or above, with a metric per
    cause; a record that arrived whole is routine."""
    s = LiveService(tmp_path / "c.db", stub=False)
    s.start()
    try:
        with caplog.at_level("INFO", logger="collector"):
            _send_record(s, seq=1)  # complete
            rec = example_record()
            rec.record_seq = 2
            first = wire.fragment(2, wire.encode_record(rec), 51)[0]  # fragment 0 of 14, the rest lost
            assert s.post(*uplink_body("generic", AppUplink("70B3D5AA00000002", 16, 1, first,
                                                            1_800_000_000 * 10**9))).status == 202
            s.advance(24 * 3600)
        closed = {r.getMessage().split(" outcome=")[1].split()[0]: r.levelname for r in caplog.records
                  if "event=message_closed" in r.getMessage()}
        assert closed == {"complete": "INFO", "incident": "WARNING"}, closed
        metrics = s.get("/metrics").body.decode()
        lost = [ln for ln in metrics.splitlines() if ln.startswith("collector_data_loss_total{")]
        assert len(lost) == 1 and 'kind="incident"' in lost[0] and lost[0].endswith(" 1.0"), lost
    finally:
        s.stop()
