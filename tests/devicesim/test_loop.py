"""The closed loop: v1 fleets as in the staged engine, v2 devices repaired through
Class A downlinks, gateway duty cycle and half-duplex, the external driver."""

from __future__ import annotations

import io

import pytest

from collector.core.wire2 import Ack, Need, decode_downlink, parse_v2, rebuild_record
from devicesim.air import Gateways
from devicesim.collector_side import CoreCollector
from devicesim.config import ConfigError, DRPolicy, ScheduleConfig, SimConfig, WireConfig, config_from_dict
from devicesim.loop import ClosedLoop
from devicesim.sim import simulate
from devicesim.trace import write_trace
from tests.devicesim.test_fidelity import _max_hour_airtime


def _fleet(devices=12, hours=6.0, every=30.0, dr=5, wire="v2", p=0.0, seed=5) -> SimConfig:
    c = SimConfig(hours=hours, seed=seed)
    c.devices.count = devices
    c.devices.schedule = ScheduleConfig(kind="every", every_min=every)
    c.devices.dr = DRPolicy(kind="fixed", dr=dr)
    c.devices.wire = wire
    if p:
        c.channel.model, c.channel.p = "bernoulli", p
    return c


def _trace(res) -> bytes:
    buf = io.StringIO()
    write_trace(res, buf)
    return buf.getvalue().encode()


def test_a_v1_fleet_is_the_same_through_the_loop_as_staged():
    """Same frames, same receptions (collisions and capture included), same deliveries."""
    c = _fleet(devices=25, hours=4, every=4, dr=3, wire="v1")
    c.devices.channels_hz = (868_100_000,)
    c.gateways.count = 2
    c.network.delivery.jitter_s = 5.0
    c.network.duplicate_p = 0.05
    staged = simulate(c)
    c.engine = "loop"
    loop = simulate(c)
    assert staged.stats.lost_collision > 20  # the comparison covers collisions
    a, b = staged.frames, loop.frames
    assert (a.start, a.channel, a.payload, a.fcnt) == (b.start, b.channel, b.payload, b.fcnt)
    assert (staged.heard == loop.heard).all()
    assert [(d.time, d.frame.fcnt, d.duplicate) for d in staged.deliveries] == \
        [(d.time, d.frame.fcnt, d.duplicate) for d in loop.deliveries]
    sd, ld = staged.stats.to_dict(), loop.stats.to_dict()
    assert {k: v for k, v in ld.items() if k in sd} == sd


def test_v2_devices_are_repaired_through_downlinks():
    v1 = simulate(_fleet(wire="v1", p=0.25))
    c = _fleet(wire="v2", p=0.25)
    c.devices.parity = 0
    res = simulate(c)
    v2 = res.stats.v2
    assert v2["needs_served"] > 10 and v2["repair_sent"] > 10 and v2["acked"] > 10
    assert res.stats.downlinks_received > 0
    done = [r for r in res.records if r.rebuilt_at is not None]
    assert len(done) >= 0.9 * len(res.records)
    assert sum(r.complete for r in v1.records) < 0.6 * len(v1.records)  # what v1 makes of the same loss
    # what the collector side held really rebuilds the record
    r = done[0]
    held = {}
    for d in res.deliveries:
        i = d.frame.tag
        if res.frames.record[i] == r.record_id and res.frames.frag[i] != 255:
            held[res.frames.frag[i]] = parse_v2(d.frame.payload)
    assert rebuild_record(list(held.values())[: r.count]) == r.record


def test_per_record_airtime_accounting():
    res = simulate(_fleet(p=0.2))
    ft = res.frames
    for r in res.records[:20]:
        mine = [k for k in range(len(ft)) if ft.record[k] == r.record_id]
        assert r.uplinks == len(mine) >= r.count
        assert r.airtime_s == pytest.approx(sum(ft.airtime[k] for k in mine))
    named = sum(x.airtime_s for x in res.downlinks
                if any(isinstance(c, Ack | Need) for c in decode_downlink(x.payload)))
    assert sum(r.downlink_airtime_s for r in res.records) == pytest.approx(named)
    assert res.stats.rebuild_median_s > 0


def test_same_seed_same_trace_and_another_seed_another():
    c = _fleet(devices=6, p=0.2)
    c.devices.parity = "adaptive"
    a, b = _trace(simulate(c)), _trace(simulate(c))
    assert a == b and b'"kind":"downlink"' in a
    c.seed += 1
    assert _trace(simulate(c)) != a


@pytest.mark.parametrize(("rx1", "read"), [(1.0, 0.1), (5.0, 4.0)])
def test_downlinks_go_out_in_rx1_or_rx2_of_an_uplink(rx1, read):
    c = _fleet(devices=20, hours=1.5, every=10, p=0.4)  # one busy gateway: RX1's 1 % runs out, RX2 takes over
    c.gateways.count = 1
    c.devices.parity = 0
    c.network.downlinks.rx1_delay_s = rx1
    c.network.downlinks.read_delay_s = read
    res = simulate(c)
    ft = res.frames
    assert {x.window for x in res.downlinks} == {"rx1", "rx2"}
    for x in res.downlinks:
        end = c.start + ft.start[x.uplink] + ft.airtime[x.uplink]
        assert ft.device[x.uplink] == int(x.dev_eui[-6:], 16)
        if x.window == "rx1":  # EU868: the uplink's channel and DR
            assert x.time == pytest.approx(end + rx1, abs=1e-6)
            assert (x.frequency_hz, x.dr) == (res.channels_hz[ft.channel[x.uplink]], ft.dr[x.uplink])
        else:
            assert x.time == pytest.approx(end + rx1 + 1, abs=1e-6)
            assert (x.frequency_hz, x.dr) == (869_525_000, 0)


def test_a_downlink_queued_after_the_windows_waits_for_the_next_uplink():
    c = _fleet(devices=1, hours=1, every=60, dr=5)
    c.channel.model = "bernoulli"
    loop = ClosedLoop(c, external=True)
    first = None
    while first is None:
        got = loop.advance(loop.peek())
        first = got[0] if got else None
    late = first.frame.end_time + 10.0  # after RX2 of this uplink
    loop.queue_downlink(first.frame.dev_eui, bytes([1, first.frame.payload[0]]), late)
    while loop.peek() < float("inf"):
        loop.advance(loop.peek())
    res = loop.result()
    (x,) = res.downlinks
    assert x.uplink > first.frame.tag
    assert res.frames.start[x.uplink] + c.start >= late


def test_the_external_driver_sees_what_the_in_process_collector_sees():
    c = _fleet(devices=5, p=0.2)
    inside = simulate(c)
    loop = ClosedLoop(c, external=True)
    app = CoreCollector()
    push = c.network.downlinks.push_latency_s
    while (t := loop.peek()) < float("inf"):
        for d in loop.advance(t):
            down, rebuilt = app.uplink(d.frame.dev_eui, d.frame.payload, d.uplink.region, "SF7BW125", t - c.start)
            if down is not None:
                loop.queue_downlink(d.frame.dev_eui, down, t + push)
                app_pending = (d.frame.dev_eui, down)
                # the in-process side is told when the server took it; so is this one
                loop.env.timeout(push).callbacks.append(lambda _e, p=app_pending: app.handed_over(*p))
    outside = loop.result()
    key = lambda res: [(x.time, x.dev_eui, x.payload, x.received) for x in res.downlinks]  # noqa: E731
    assert key(outside) == key(inside) and key(inside)


def test_half_duplex_costs_uplinks():
    c = _fleet(devices=20, hours=1.5, every=10, dr=5, p=0.3)
    c.gateways.count = 1
    c.devices.parity = 0
    on = simulate(c).stats
    c.network.downlinks.half_duplex = False
    off = simulate(c).stats
    assert on.downlinks_sent > 30
    assert on.uplinks_deaf > 0 and off.uplinks_deaf == 0
    assert on.der < off.der  # a transmitting gateway hears nothing


def test_gateway_transmissions():
    from collector.core.lorawan import EU868

    gw = Gateways(EU868, 2)
    gw.send(0, 10.0, 1.0, 868_100_000)
    assert gw.deaf(0, 10.5, 12.0) and not gw.deaf(0, 11.5, 12.0) and not gw.deaf(1, 10.5, 12.0)
    assert not gw.can_send(0, 10.5, 0.1, 869_525_000)  # one transmission at a time
    assert not gw.can_send(0, 109.0, 1.0, 868_300_000)  # 1 %: the next start 100 s after the last
    assert gw.can_send(0, 110.0, 1.0, 868_300_000)
    assert gw.can_send(0, 12.0, 1.0, 869_525_000)  # another sub-band, 10 %
    gw.send(0, 12.0, 1.0, 869_525_000)
    assert not gw.can_send(0, 20.0, 1.0, 869_525_000) and gw.can_send(0, 22.0, 1.0, 869_525_000)


def test_gateways_keep_their_downlink_duty_cycle_over_any_hour():
    c = _fleet(devices=20, hours=1.5, every=10, dr=5, p=0.4)
    c.gateways.count = 1
    c.devices.parity = 0
    res = simulate(c)
    assert res.stats.downlinks_sent > 40
    for band, budget in (((868_000_000, 868_600_000), 36.0), ((869_400_000, 869_650_000), 360.0)):
        tx = [(x.time, x.time + x.airtime_s) for x in res.downlinks if band[0] <= x.frequency_hz <= band[1]]
        assert tx and _max_hour_airtime(tx) <= budget + 1e-6
    # the off-time holds between a gateway's downlinks of one sub-band too
    rx1 = sorted((x.time, x.airtime_s) for x in res.downlinks if x.window == "rx1")
    assert all(b[0] - a[0] >= a[1] / 0.01 - 1e-6 for a, b in zip(rx1, rx1[1:], strict=False))


def test_downlink_loss_p_takes_downlinks_from_the_devices():
    """``network.downlinks.loss_p``: the gateways still transmit (airtime, duty cycle),
    the devices get about 1 - p of it, seeded and repeatable; 0 is the run without it."""
    c = _fleet(devices=6, p=0.2)
    base = simulate(c)
    c.network.downlinks.loss_p = 0.0
    assert _trace(simulate(c)) == _trace(base)  # the key at 0 draws nothing
    c.network.downlinks.loss_p = 0.9
    a = simulate(c)
    s = a.stats
    assert s.downlinks_sent > 100
    assert s.downlinks_received == sum(d.received for d in a.downlinks)
    assert 0.03 * s.downlinks_sent < s.downlinks_received < 0.2 * s.downlinks_sent
    assert base.stats.downlinks_received > 0.7 * base.stats.downlinks_sent
    assert _trace(simulate(c)) == _trace(a)  # same seed, byte-identical
    c.network.downlinks.loss_p = 1.0
    none = simulate(c)
    assert none.stats.downlinks_sent > 0 and none.stats.downlinks_received == 0
    assert none.stats.v2["acked"] == 0


def test_mixed_groups():
    c = _fleet(devices=6, hours=3, wire="v1")
    c.channel.model = "bernoulli"
    c.network.downlinks.half_duplex = False  # (with it, one v1 device keeps meeting the v2 devices' downlinks)
    c.devices.groups = (WireConfig(count=2, wire="v2", parity="adaptive"), WireConfig(count=4, wire="v1"))
    res = simulate(c)
    assert {r.wire for r in res.records if r.device < 2} == {"v2"}
    assert {r.wire for r in res.records if r.device >= 2} == {"v1"}
    assert all(r.complete for r in res.records)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"devices": {"wire": "v3"}}, "devices.wire must be v1|v2"),
        ({"devices": {"wire": "v2", "parity": 40}}, "devices.parity must be 0..32"),
        ({"devices": {"count": 3, "groups": [{"count": 2, "wire": "v2"}]}}, "add up to 2, devices.count is 3"),
        ({"devices": {"count": 1, "groups": [{"count": 1, "colour": 2}]}}, "colour"),
        ({"engine": "staged", "devices": {"wire": "v2"}}, "cannot run v2"),
        ({"engine": "warp"}, "engine must be"),
        ({"network": {"downlinks": {"rx1_delay_s": 0.5}}}, "rx1_delay_s"),
        ({"network": {"downlinks": {"rx2_dr": 9}}}, "rx2_dr"),
        ({"network": {"downlinks": {"loss_p": 1.5}}}, "network.downlinks.loss_p must be a probability"),
        ({"network": {"downlinks": {"loss": 0.9}}}, "unknown key(s) loss"),
    ],
)
def test_bad_loop_config_is_named(data, needle):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    assert needle in str(e.value)


def test_a_record_due_while_its_device_listens_is_still_made():
    """A v2 device's record falls due while the device transmits or listens in RX1/RX2
    (it takes it up after the windows): the record is made and sent, not refused as
    "time went backwards" and left out of the run's records."""
    from devicesim.model import record_times
    c = _fleet(devices=20, hours=6.0, every=7.0, dr=0, p=0.2)
    loop = ClosedLoop(c)
    res = loop.run()
    scheduled = sum(len(record_times(c, i, loop.horizon)[0]) for i in range(c.devices.count))
    assert loop.unsendable == 0
    assert len(res.records) == scheduled
