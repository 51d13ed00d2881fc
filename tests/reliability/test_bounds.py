"""Bounds: hostile traffic shapes against the open-message caps. Memory (RSS of the
``collector serve`` process) and disk (database size) stay within the limits of
docs/operations.md ("Limits"), and the incidents and metrics show what was
closed early."""

from __future__ import annotations

import pytest

from collector.core import wire
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.testing.examples import example_record

FRAG0 = wire.fragment(0, wire.encode_record(example_record()), 51)[0]


def up(dev: str, payload: bytes) -> Uplink:
    return Uplink(dev, 16, payload, 1_800_000_000_000, data_rate="SF7BW125", region="EU868")


def test_a_flood_of_devices_keeps_open_and_remembered_messages_within_the_cap():
    r = Reassembler(Settings(max_open_total=100, max_open_per_device=32, duplicate_window=3600))
    for i in range(5000):
        r.feed(up(f"70B3D5EE{i:08X}", FRAG0), 1000.0 + i * 0.01)
    assert len(r.open_messages()) == 100
    # closed messages are remembered for duplicates for an hour, but no more of them than the cap
    assert len(r.recent_messages()) <= 100
    # the newest are the ones remembered: a duplicate of a just-evicted message is still recognised
    last_evicted = f"70B3D5EE{4899:08X}"
    assert r.feed(up(last_evicted, FRAG0), 1100.0).status == "duplicate"


def test_one_device_opening_thousands_of_messages_holds_at_most_its_cap():
    r = Reassembler(Settings(max_open_total=1000, max_open_per_device=32))
    for i in range(3000):
        payload = bytes([i % 256]) + FRAG0[1:-1] + bytes([i // 256])
        res = r.feed(up("70B3D5FFFF000001", payload), 1000.0 + i)
        assert res.status == "accepted"
    assert len(r.open_messages()) == 32
    assert len(r.recent_messages()) <= 1000


def test_restoring_keeps_only_the_newest_remembered_messages():
    r = Reassembler(Settings(max_open_total=50))
    for i in range(500):
        r.feed(up(f"70B3D5EE{i:08X}", FRAG0), 1000.0 + i)
    state = [m.to_dict() for m in r.open_messages() + r.recent_messages()]
    r2 = Reassembler(Settings(max_open_total=50))
    r2.load(state + [{**state[-1], "uid": "old", "dev_eui": "70B3D5EE99999999", "closed": 1.0,
                      "close_reason": "deadline"}], r.next_seq)
    assert len(r2.open_messages()) == 50 and len(r2.recent_messages()) == 50
    assert "old" not in {m.uid for m in r2.recent_messages()}


#: limits the live run must stay within (docs/operations.md, "Limits"), for caps of 2000 open messages
RSS_BUDGET_KB = 64 * 1024
DB_BYTES_PER_FRAGMENT = 4096


@pytest.mark.slow
def test_hostile_shapes_stay_within_memory_and_disk_limits(tmp_path, workloads):
    f = workloads.bounds_run(tmp_path, per_device_messages=1000, devices=4000, huge_messages=300,
                             max_open_total=2000)
    phases = ("one_device", "many_devices", "huge_counts")
    for p in phases:
        assert set(f[p]["statuses"]) == {202}, f[p]
        assert f[p]["open_messages"] <= 2000
    assert f["one_device"]["open_messages"] == 32
    assert f["many_devices"]["open_messages"] == 2000
    growth = max(f[p]["rss_kb"] for p in phases) - f["baseline"]["rss_kb"]
    assert growth <= RSS_BUDGET_KB, f
    fragments = sum(f[p]["requests"] for p in phases)
    assert f["huge_counts"]["db_bytes"] <= f["baseline"]["db_bytes"] + fragments * DB_BYTES_PER_FRAGMENT
    m = f["metrics"]
    assert m['collector_incidents_total{code="device_open_cap"}'] >= 1000 - 32 - 256  # msg_ids wrap at 256
    assert m['collector_incidents_total{code="open_cap"}'] >= 4000 - 2000
    assert m["collector_open_messages"] == 2000
    assert f["healthz"] == 200
