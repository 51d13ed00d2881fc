"""End to end through devices, channel and network server: ground truth, ordering,
reboots, determinism and the trace."""

from __future__ import annotations

import base64
import json

import pytest

from collector.core.wire import decode_record, defragment, parse_fragment
from devicesim.config import ChannelConfig, Latency, RebootConfig, ScheduleConfig
from devicesim.rng import dev_eui
from devicesim.sim import simulate
from devicesim.trace import read_trace, write_trace


def test_device_euis_are_deterministic():
    assert dev_eui(0) == "70B3D57ED0000000"
    assert dev_eui(0x1A2B) == "70B3D57ED0001A2B"


def test_records_are_valid_and_complete_ones_reassemble_from_the_bodies(make_config):
    c = make_config(devices=4, hours=4, dr=3)
    c.format = "ttn"
    res = simulate(c)
    assert res.records and all(r.complete for r in res.records)
    by_msg: dict[tuple[str, int], list[bytes]] = {}
    for _, path, body in res.uplinks():
        assert path == "/uplink/ttn"
        payload = base64.b64decode(body["uplink_message"]["frm_payload"])
        by_msg.setdefault((body["end_device_ids"]["dev_eui"], payload[0]), []).append(payload)
    for r in res.records:
        rec = decode_record(r.record)
        assert rec.channels and rec.location and rec.diagnostics and rec.config and rec.site
        assert r.count == len(r.fragments) and r.size == 115
    first = res.records[0]
    msg_id, data = defragment(by_msg[(first.dev_eui, first.msg_id)][: first.count])
    assert (msg_id, data) == (first.msg_id, first.record)


def test_msg_id_counts_from_zero_and_wraps(make_config):
    c = make_config(devices=1, hours=30, every_min=6, dr=5)
    res = simulate(c)
    ids = [r.msg_id for r in res.records]
    assert len(ids) > 260
    assert ids[:3] == [0, 1, 2]
    assert ids[255:258] == [255, 0, 1]
    fcnts = [res.frames.fcnt[k] for k in range(len(res.frames))]
    assert fcnts == list(range(len(fcnts)))


def test_reboot_resets_msg_id_and_frame_counter(make_config):
    c = make_config(devices=2, hours=6, every_min=30)
    c.devices.reboots = RebootConfig(at_s=(3 * 3600 + 60,), devices=(1,), rejoin_s=10)
    res = simulate(c)
    recs1 = [r for r in res.records if r.device == 1]
    sessions = [r.session for r in recs1]
    assert 0 in sessions and 1 in sessions
    after = [r for r in recs1 if r.session == 1]
    assert after[0].msg_id == 0
    frames1 = [k for k in range(len(res.frames)) if res.frames.device[k] == 1]
    f_after = [res.frames.fcnt[k] for k in frames1 if res.frames.session[k] == 1]
    assert f_after[0] == 0 and f_after == sorted(f_after)
    # the application still gets the new session's frames: the server accepts the reset
    delivered = {(d.frame.session, d.frame.fcnt) for d in res.deliveries if d.frame.dev_eui == dev_eui(1)}
    assert (1, 0) in delivered
    assert all(r.session == 0 for r in res.records if r.device == 0)


def test_random_reboots_cut_messages_and_restart_ids(make_config):
    c = make_config(devices=20, hours=24, every_min=60, dr=0)
    c.devices.reboots = RebootConfig(per_day=3.0)
    res = simulate(c)
    assert res.stats.records_cut > 0
    cut = [r for r in res.records if None in r.sent_at]
    assert cut
    restarted = [r for r in res.records if r.session > 0]
    assert any(r.msg_id == 0 for r in restarted)


def _ooo(make_config, jitter: float, gateways: int = 1):
    c = make_config(devices=30, hours=24, every_min=20, dr=5)
    c.gateways.count = gateways
    c.network.delivery = Latency(0.1, jitter, "exponential")
    return simulate(c)


def test_without_jitter_arrival_order_is_send_order(make_config):
    res = _ooo(make_config, 0.0)
    assert res.stats.out_of_order == 0
    sent_order = {k: res.frames.start[k] for k in range(len(res.frames))}
    times = [sent_order[d.frame.tag] for d in res.deliveries]
    assert times == sorted(times)
    assert res.stats.uplinks_delivered == res.stats.uplinks_sent


def test_reordering_grows_with_backhaul_jitter(make_config):
    fractions = [_ooo(make_config, j).stats.out_of_order_fraction for j in (0.0, 5.0, 30.0, 120.0)]
    assert fractions[0] == 0.0
    assert fractions == sorted(fractions) and fractions[-1] > fractions[1] > 0.0


def test_gilbert_losses_are_bursty(make_config):
    c = make_config(devices=10, hours=48, every_min=10, dr=5)
    c.channel = ChannelConfig(model="gilbert", p_gb=0.05, p_bg=0.2, loss_good=0.0, loss_bad=1.0)
    res = simulate(c)
    per_dev: dict[int, list[bool]] = {}
    for k in range(len(res.frames)):
        per_dev.setdefault(res.frames.device[k], []).append(not res.heard[:, k].any())
    lost = sum(sum(v) for v in per_dev.values())
    rate = lost / len(res.frames)
    assert 0.12 < rate < 0.28  # stationary bad-state share 0.05 / 0.25 = 0.2
    bursts = sum(1 for v in per_dev.values() for a, b in zip([False, *v], v, strict=False) if b and not a)
    assert lost / bursts > 3.0  # mean burst length 1 / p_bg = 5 frames


def test_bernoulli_loss_rate(make_config):
    res = simulate(make_config(devices=20, hours=24, every_min=10, p=0.2))
    assert res.stats.delivery_ratio == pytest.approx(0.8, abs=0.03)


def test_same_seed_gives_a_byte_identical_trace(make_config, tmp_path):
    c = make_config(devices=6, hours=6)
    c.network.delivery = Latency(0.1, 10.0)
    c.network.duplicate_p = 0.1
    c.channel.model = "physical"
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write_trace(simulate(c), a)
    write_trace(simulate(c), b)
    assert a.read_bytes() == b.read_bytes()
    c.seed += 1
    write_trace(simulate(c), b)
    assert a.read_bytes() != b.read_bytes()


def _per_device(path) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in read_trace(path):
        if line["kind"] in ("uplink", "record"):
            out.setdefault(line["devEui"], []).append(json.dumps(line, sort_keys=True))
    return out


def test_adding_a_device_does_not_change_the_others(make_config, tmp_path):
    small = make_config(devices=5, hours=24)
    small.network.delivery = Latency(0.1, 20.0)
    small.network.duplicate_p = 0.2
    small.devices.schedule = ScheduleConfig(kind="daily", jitter_min=60)
    small.devices.dr.kind = "adr"
    big = make_config(devices=6, hours=24)
    big.network, big.devices.schedule, big.devices.dr = small.network, small.devices.schedule, small.devices.dr
    write_trace(simulate(small), tmp_path / "s.jsonl")
    write_trace(simulate(big), tmp_path / "b.jsonl")
    s, b = _per_device(tmp_path / "s.jsonl"), _per_device(tmp_path / "b.jsonl")
    assert set(b) - set(s) == {dev_eui(5)}
    for eui, lines in s.items():
        assert b[eui] == lines


def test_adding_a_device_keeps_the_others_draws_on_the_physical_channel(make_config):
    small = make_config(devices=8, hours=6)
    small.channel.model = "physical"
    big = make_config(devices=9, hours=6)
    big.channel.model = "physical"
    rs, rb = simulate(small), simulate(big)
    for a, b in zip(rs.devices, rb.devices, strict=False):
        assert (a.x, a.y, a.dr) == (b.x, b.y, b.dr)
    key = lambda res: [(r.dev_eui, r.record, r.sent_at) for r in res.records if r.device < 8]  # noqa: E731
    assert key(rs) == key(rb)


def test_trace_lines(make_config, tmp_path):
    c = make_config(devices=3, hours=3)
    c.format = "chirpstack"
    c.network.duplicate_p = 0.5
    res = simulate(c)
    n = write_trace(res, tmp_path / "t.jsonl")
    lines = list(read_trace(tmp_path / "t.jsonl"))
    assert len(lines) == n
    assert lines[0]["kind"] == "meta" and lines[-1]["kind"] == "summary"
    ups = [x for x in lines if x["kind"] == "uplink"]
    recs = [x for x in lines if x["kind"] == "record"]
    assert len(ups) == res.stats.app_deliveries and len(recs) == len(res.records)
    assert [u["at"] for u in ups] == sorted(u["at"] for u in ups)
    assert all(u["path"] == "/uplink/chirpstack?event=up" for u in ups)
    assert any(u["duplicate"] for u in ups)
    r = recs[0]
    assert r["devEui"] == dev_eui(r["device"])
    frags = [bytes.fromhex(h) for h in r["fragments"]]
    assert parse_fragment(frags[0]).count == r["count"] == len(frags)
    assert defragment(frags) == (r["msgId"], bytes.fromhex(r["record"]))
    assert r["fragmentsSent"] == list(range(r["count"]))
    assert sorted(int(k) for k in r["deliveredAt"]) == r["fragmentsDelivered"]
