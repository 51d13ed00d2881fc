"""Nothing acknowledged is lost, continued (issue 12, items 4 and 5): wall-clock steps
and a damaged database, against the real service with a real SQLite file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from collector.testing.harness import LiveService

# loaded by conftest.py (tests/reliability/workloads.py)
W = sys.modules["reliability_workloads"]
message_uplinks = W.message_uplinks


# --------------------------------------------------------------------------- item 4


def test_the_system_clock_times_deadlines_on_a_monotonic_clock():
    """A step of the wall clock moves ``wall()`` and leaves the service time alone."""
    import asyncio
    import time

    from collector.service.clock import SystemClock
    step = [0.0]
    clock = SystemClock(wall=lambda: time.time() + step[0])
    t0 = clock.now()
    step[0] = 7200.0
    assert clock.wall() - clock.now() > 7100
    assert clock.now() - t0 < 60
    step[0] = -86400.0
    assert clock.now() - t0 < 60 and clock.now() >= t0

    async def sleep() -> float:
        start = time.monotonic()
        await clock.sleep_until(clock.now() + 0.05)
        return time.monotonic() - start
    assert 0.04 < asyncio.run(sleep()) < 5  # neither 24 h late nor at once


def _step_wall(live: LiveService, seconds: float) -> dict:
    r = live.post("/admin/clock", {"stepWall": seconds})
    assert r.status == 200, r
    return r.json()


def _no_times(ups: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The generic-format uplinks without receive times (the collector stamps its own)."""
    out = []
    for path, body in ups:
        if path == "/uplink":
            body = {k: v for k, v in body.items() if k != "receivedAt"}
        out.append((path, body))
    return out


def test_a_wall_clock_step_does_not_split_a_half_received_message(tmp_path):
    """Item 4: +2 h on the wall clock between two fragments of a message with a
    15-minute deadline: the message still completes, its receive times follow the
    wall clock."""
    (ups,) = message_uplinks(1)
    with LiveService(tmp_path / "c.db", message_timeout=900, deadline_policy="fixed") as live:
        for pb in ups[:3]:
            assert live.post(*pb).status == 202
        moved = _step_wall(live, 7200)
        assert moved["wall"] - moved["now"] == 7200
        for pb in _no_times(ups[3:]):
            r = live.post(*pb)
            assert r.status == 202 and r.json()["status"] == "accepted", r
        live.advance(1)
        status = live.get("/api/status").json()
        msg = live.get("/api/messages").json()["messages"][0]
        stamped = [f["receivedAt"] for f in live.get(f"/api/messages/{msg['id']}").json()["fragments"]
                   if f["source"] == "generic" and f["index"] >= 3]
    assert status["messages"]["complete"] == 1 and status["incidents"] == 0, status
    assert stamped and all(t.startswith("2027-01-15T10:") for t in stamped), stamped  # wall: 08:00 + 2 h


def test_a_wall_clock_step_back_does_not_stall_delivery_nor_forward_dead_letter(tmp_path):
    """Item 4: with the Web App down, the wall clock steps back a day (a retry must
    not wait for it) and forward eight days (more than ``max_age``: nothing may be
    dead-lettered for it)."""
    msgs = message_uplinks(2)
    with LiveService(tmp_path / "c.db", message_timeout=60, deadline_policy="fixed", backoff_base=1,
                     backoff_cap=30, circuit_threshold=1000, max_age=7 * 86400) as live:
        live.set_faults(outage=True)
        for pb in msgs[0]:
            assert live.post(*pb).status == 202
        live.advance(61)  # closed; its first upload fails
        _step_wall(live, -86400)
        live.set_faults(outage=False)
        live.advance(31)
        back = live.get("/api/status").json()["documents"]
        live.set_faults(outage=True)
        for pb in msgs[1]:
            assert live.post(*pb).status == 202
        live.advance(61)
        _step_wall(live, 8 * 86400 + 86400)
        for _ in range(4):
            live.advance(30)
        forward = live.get("/api/status").json()["documents"]
        live.set_faults(outage=False)
        live.advance(31)
        after = live.get("/api/status").json()["documents"]
    assert back == {"pending": 0, "delivered": 1, "dead": 0}, back
    assert forward == {"pending": 1, "delivered": 1, "dead": 0}, forward
    assert after == {"pending": 0, "delivered": 2, "dead": 0}, after


# --------------------------------------------------------------------------- item 5


def _serve_fails(db: Path) -> str:
    """``collector serve`` on ``db``: it must stop at once with one line, no traceback."""
    p = subprocess.run([sys.executable, "-m", "collector", "serve", "--db", str(db), "--ingest-token", "t",
                        "--port", "0"], capture_output=True, text=True, timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    lines = [ln for ln in p.stderr.splitlines() if ln.startswith("Error:")]
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    return lines[0]


def test_a_damaged_database_stops_the_start_with_one_line(tmp_path):
    """Item 5: a file that is not a database, a real database cut in half, and one with a
    damaged page (PRAGMA quick_check at start) each stop ``collector serve`` with one line."""
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not an SQLite database\n" * 200)
    assert "damaged or not a database" in _serve_fails(junk)

    db = tmp_path / "c.db"
    with LiveService(db, stub=False) as live:
        for ups in message_uplinks(6):
            for pb in ups:
                assert live.post(*pb).status == 202
    truncated = tmp_path / "truncated.db"
    truncated.write_bytes(db.read_bytes()[: db.stat().st_size // 2])
    assert "damaged" in _serve_fails(truncated)
    with sqlite3.connect(db) as c:
        root = c.execute("SELECT rootpage FROM sqlite_master WHERE name='fragments'").fetchone()[0]
        page = c.execute("PRAGMA page_size").fetchone()[0]
    with open(db, "r+b") as f:  # scribble over the fragments table's root page
        f.seek((root - 1) * page + 8)
        f.write(b"\xa5" * (page - 8))
    line = _serve_fails(db)
    assert "is damaged" in line and str(db) in line, line


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes to a read-only file")
def test_a_read_only_database_stops_the_start_with_one_line(tmp_path):
    db = tmp_path / "c.db"
    with LiveService(db, stub=False):
        pass
    db.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        assert "cannot be written" in _serve_fails(db)
    finally:
        tmp_path.chmod(0o755)


@pytest.mark.parametrize("damage", ["delete-wal", "truncate-wal", "delete-db", "replace-db"])
def test_a_database_damaged_under_the_running_service_is_reported_and_refuses_uplinks(tmp_path, damage):
    """Item 5: the WAL or the database deleted, truncated or replaced under the running
    service: /healthz says so (503, with the problem in one line) and an uplink is
    refused with 503 instead of being acknowledged into a file the next start will
    not read."""
    db = tmp_path / "c.db"
    ups = message_uplinks(2)
    with LiveService(db, stub=False) as live:
        # all but the last fragment: no message completes, so nothing writes in the
        # background (a document, its delivery attempts) - a write after a truncation
        # puts the WAL back to its size, and no size check can see the truncation then
        for pb in ups[0][:-1]:
            assert live.post(*pb).status == 202
        assert live.get("/healthz").status == 200
        wal = Path(str(db) + "-wal")
        if damage == "delete-wal":
            wal.unlink()
        elif damage == "truncate-wal":
            os.truncate(wal, 0)
        elif damage == "delete-db":
            db.unlink()
        else:
            db.rename(tmp_path / "old.db")
            db.write_bytes((tmp_path / "old.db").read_bytes())
        health = live.get("/healthz")
        refused = live.post(*ups[1][0])
    assert health.status == 503, health
    problem = health.json()["problem"]
    assert ("write-ahead log" if "wal" in damage else "database file") in problem, problem
    assert {"delete": "deleted", "truncate": "truncated", "replace": "replaced"}[damage.split("-")[0]] in problem
    assert refused.status == 503 and problem in refused.json()["error"], refused
