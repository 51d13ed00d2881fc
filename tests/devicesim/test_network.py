"""The network-server model on its own: dedup, frame counters, backhaul effects."""

from __future__ import annotations

import base64

import pytest

from devicesim.config import Latency, NetworkConfig, Outage
from devicesim.network import Frame, NetworkServer, Reception

EUI = "70B3D57ED0000001"


def frame(fcnt: int, t: float, session: int = 0, payload: bytes = b"\x01\x00\x01abc") -> Frame:
    return Frame(EUI, fcnt, payload, end_time=t, dr=3, session=session)


def test_ideal_server_is_a_one_liner_passthrough():
    (d,) = NetworkServer.ideal().uplink(frame(5, 1000.0))
    assert d.time == 1000.0 and not d.duplicate
    path, body = d.body("generic")
    assert path == "/uplink"
    assert body["devEui"] == EUI and body["fCnt"] == 5 and body["dataRate"] == "SF9BW125"
    assert base64.b64decode(body["payload"]) == b"\x01\x00\x01abc"
    path, body = d.body("ttn")
    assert path == "/uplink/ttn" and body["uplink_message"]["f_cnt"] == 5
    path, body = d.body("chirpstack")
    assert body["deviceInfo"]["devEui"] == EUI.lower() and body["fCnt"] == 5


def test_dedup_merges_gateway_copies_within_the_window():
    ns = NetworkServer(NetworkConfig(dedup_window_s=0.2, backhaul=Latency(0.0, 0.0), delivery=Latency(0.0, 0.0)),
                       gateways=3)
    out = ns.uplink(frame(0, 50.0), [Reception(0, -100, 3.0), Reception(2, -90, 8.0)])
    assert len(out) == 1
    assert out[0].time == pytest.approx(50.2)
    assert [g.gateway_id for g in out[0].uplink.gateways] == ["gw-00", "gw-02"]
    _, body = out[0].body("chirpstack")
    assert len(body["rxInfo"]) == 2


def test_copy_outside_the_window_is_dropped_as_late():
    cfg = NetworkConfig(dedup_window_s=0.2, backhaul=Latency(0.0, 0.0), delivery=Latency(0.0, 0.0),
                        outages=(Outage(gateway=1, start_s=0.0, duration_s=100.0),))
    ns = NetworkServer(cfg, gateways=2)
    out = ns.uplink(frame(0, 50.0), [Reception(0), Reception(1)])
    assert len(out) == 1 and len(out[0].uplink.gateways) == 1
    assert ns.stats.late_copies == 1


def test_frame_counter_must_increase_until_a_new_session():
    ns = NetworkServer.ideal()
    assert len(ns.uplink(frame(3, 10.0))) == 1
    assert ns.uplink(frame(3, 11.0)) == []
    assert ns.uplink(frame(2, 12.0)) == []
    assert len(ns.uplink(frame(4, 13.0))) == 1
    assert len(ns.uplink(frame(0, 14.0, session=1))) == 1  # re-joined after a reboot
    assert ns.stats.dropped_fcnt == 2 and ns.stats.accepted == 3


def test_outage_buffers_and_flushes_late_in_order():
    cfg = NetworkConfig(dedup_window_s=0.0, backhaul=Latency(0.0, 0.0), delivery=Latency(0.0, 0.0),
                        outages=(Outage(gateway=0, start_s=100.0, duration_s=600.0),), flush_spacing_s=0.5)
    ns = NetworkServer(cfg, start=0.0)
    for k, t in enumerate([50.0, 150.0, 200.0, 650.0, 800.0]):
        ns.submit(frame(k, t))
    out = ns.drain()
    assert [d.uplink.fcnt for d in out] == [0, 1, 2, 3, 4]
    assert [d.time for d in out] == [50.0, 700.0, 700.5, 701.0, 800.0]


def test_out_of_order_arrival_at_the_server_drops_the_older_frame():
    """Frame 1 reaches the server through a gateway whose backhaul is down; frame 2
    arrives first through a working one, so frame 1 fails the counter check."""
    cfg = NetworkConfig(dedup_window_s=0.2, backhaul=Latency(0.0, 0.0), delivery=Latency(0.0, 0.0),
                        outages=(Outage(gateway=1, start_s=0.0, duration_s=1000.0),))
    ns = NetworkServer(cfg, gateways=2)
    ns.submit(frame(1, 100.0), [Reception(1)])
    ns.submit(frame(2, 200.0), [Reception(0)])
    out = ns.drain()
    assert [d.uplink.fcnt for d in out] == [2]
    assert ns.stats.dropped_fcnt == 1


def test_duplicates_repeat_the_exact_body_later():
    cfg = NetworkConfig(dedup_window_s=0.0, backhaul=Latency(0.0, 0.0), delivery=Latency(0.0, 0.0),
                        duplicate_p=1.0, duplicate_delay=Latency(5.0, 0.0))
    out = NetworkServer(cfg).uplink(frame(1, 10.0))
    assert [d.duplicate for d in out] == [False, True]
    assert out[1].time == pytest.approx(15.0)
    assert out[0].body("ttn") == out[1].body("ttn")


@pytest.mark.parametrize("dist", ["exponential", "uniform", "lognormal"])
def test_latency_draws_are_per_device_and_reproducible(dist):
    cfg = NetworkConfig(dedup_window_s=0.0, delivery=Latency(0.1, 2.0, dist))

    def times(seed, other_first: bool):
        ns = NetworkServer(cfg, seed=seed)
        if other_first:
            ns.submit(Frame("70B3D57ED0000002", 0, b"\x00\x00\x01x", end_time=1.0))
        for k in range(20):
            ns.submit(frame(k, 10.0 + 100 * k))
        return [d.time for d in ns.drain() if d.uplink.dev_eui == EUI]

    a = times(1, False)
    assert a == times(1, True)
    assert a != times(2, False)
    assert all(t >= 10.1 + 100 * k for k, t in enumerate(a))
