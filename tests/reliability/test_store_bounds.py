"""Issue 12, item 10: the disk budget (fragments per day x retention x 4 KiB) holds
for incident traffic too: incidents, their messages and the copy of the fragments
they keep are pruned after ``retention`` like delivered documents (they were kept
for ever: one device's 100k broken uplinks left 371 MB)."""

from __future__ import annotations

import sqlite3

from collector.core import wire
from collector.service.loops import CLOSING
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, wait_until
from devicesim.formats import AppUplink, uplink_body

RETENTION = 7 * 24 * 3600.0


def _rows(db, table: str) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        return c.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]  # noqa: S608


def test_incidents_are_pruned_after_the_retention(tmp_path):
    db = tmp_path / "c.db"
    with LiveService(db, stub=False, retention=RETENTION) as s:
        for j in range(5):  # fragment 0 of 14 only: each message an incident
            rec = example_record()
            rec.record_seq = j
            first = wire.fragment(j, wire.encode_record(rec), 51)[0]
            r = s.post(*uplink_body("generic", AppUplink("70B3D5AA000000F1", 16, j, first, 1_800_000_000 * 10**9)))
            assert r.status == 202, r
        s.advance(24 * 3600)
        assert len(s.get("/api/incidents").json()["incidents"]) == 5
        s.run(s.app[CLOSING].prune())
        assert _rows(db, "incidents") == 5  # younger than the retention: kept
        s.advance(RETENTION + 1)  # the pruner runs every prune_interval of the clock
        s.run(s.app[CLOSING].prune())
        wait_until(lambda: _rows(db, "incidents") == 0, 30, "the incidents pruned")
        assert s.get("/api/incidents").json()["incidents"] == []
        assert _rows(db, "incidents") == 0 and _rows(db, "messages") == 0 and _rows(db, "fragments") == 0
