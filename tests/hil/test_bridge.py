"""Emulator → bridge → HTTP: the stand-in server receives the exact bodies a
network server would POST; and the P2P gateway forwards what a receiver hears."""

from __future__ import annotations

import threading

import pytest

from collector.core import wire
from collector.testing.harness import INGEST_TOKEN
from devicesim.formats import uplink_body
from hil import bench, p2p
from hil.bridge import Forwarder, deliver, frame_to_uplink
from hil.drivers.rn2483 import RN2483
from hil.emulator import Air

pytestmark = pytest.mark.timeout(60)


@pytest.mark.parametrize("fmt", ["generic", "ttn", "chirpstack"])
@pytest.mark.parametrize("module", ["rn2483", "rak3172"])
def test_bridge_delivers_exact_bodies(rig_factory, collector, messages, fmt, module):
    fwd = Forwarder(collector.url, fmt, token=INGEST_TOKEN)
    try:
        rig = rig_factory(module, "US915", on_tx=fwd.submit)
        rig.modem.join()
        rig.modem.set_dr(3)
        record = wire.encode_record(bench.make_record(5, 9))
        bench.send_record(rig.modem, 12, record)
        assert fwd.drain(10)
    finally:
        fwd.close()
    frames = rig.model.tx_log
    assert len(frames) == 3
    expected = [uplink_body(fmt, frame_to_uplink(f)) for f in frames]
    assert sorted(map(repr, ((d.path, d.body) for d in fwd.deliveries))) == sorted(map(repr, expected))
    assert all(d.status == 202 for d in fwd.deliveries)
    msgs = messages(collector, frames[0].dev_eui)
    assert [(m["msgId"], m["state"]) for m in msgs] == [(12, "complete")]


def test_generic_body_fields(rig_factory):
    rig = rig_factory("rak3172", "US915")
    rig.modem.join()
    rig.modem.set_dr(1)
    rig.modem.send(16, b"\x01\x00\x01\xaa")
    path, body = uplink_body("generic", frame_to_uplink(rig.model.tx_log[0]))
    assert path == "/uplink"
    assert body["devEui"] == "0004A30B001C0530"
    assert (body["fPort"], body["payload"], body["dataRate"], body["gatewayId"]) == (16, "AQABqg==", "SF9BW125", "bench-gw")


def test_unreachable_collector_is_reported_not_raised(rig_factory):
    rig = rig_factory("rn2483", "US915")
    rig.modem.join()
    rig.modem.send(16, b"\x01\x00\x01\xaa")
    d = deliver("http://127.0.0.1:9", "generic", frame_to_uplink(rig.model.tx_log[0]))
    assert d.status is None and d.reply


def test_p2p_gateway_forwards_to_the_collectors_own_format(rig_factory, collector, messages, until):
    air = Air()
    sender = rig_factory("rn2483", "EU868", air=air, dev_eui="70B3D57ED005A1B2")
    receiver = rig_factory("rn2483", "EU868", air=air, dev_eui="0004A30B00FFFFFF")
    assert isinstance(receiver.modem, RN2483) and isinstance(sender.modem, RN2483)
    stop = threading.Event()
    errors: list[BaseException] = []
    delivered: list = []

    def gw():
        try:
            p2p.run_gateway(receiver.modem, collector.url, sf=9, token=INGEST_TOKEN, stop=stop, poll_s=0.1,
                            on_delivery=delivered.append)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    t = threading.Thread(target=gw)
    t.start()
    try:
        until(lambda: receiver.model.rx_waiting or errors, 5, "the receiver to listen")
        p2p.prepare_radio(sender.modem, 9)
        record = wire.encode_record(bench.make_record(1, 1, samples=20))
        token = 0
        for frag in wire.fragment(3, record, 40):
            # a new `radio rx 0` since the last frame: the receiver listens again
            until(lambda t=token: (receiver.model.rx_waiting and receiver.model.rx_token != t) or errors,
                  5, "the receiver to listen again")
            token = receiver.model.rx_token
            sender.modem.radio_tx(p2p.encode_frame("70B3D57ED005A1B2", frag))
        n = len(wire.fragment(3, record, 40))
        until(lambda: len(delivered) >= n or errors, 10, "the forwarded frames")
    finally:
        stop.set()
        t.join(10)
    assert not errors
    posts = [(d.path, d.body) for d in delivered]
    assert {d.status for d in delivered} == {202}
    assert {p for p, _ in posts} == {"/uplink"}
    assert {b["devEui"] for _, b in posts} == {"70B3D57ED005A1B2"}
    assert [b.get("fCnt", 0) for _, b in posts] == list(range(n))
    assert {b["fPort"] for _, b in posts} == {16} and {b["dataRate"] for _, b in posts} == {"SF9BW125"}
    assert messages(collector, "70B3D57ED005A1B2")[0]["state"] == "complete"


def test_p2p_frame_codec():
    frame = p2p.encode_frame("70b3d57ed005a1b2", b"\x01\x00\x01\xaa")
    assert p2p.decode_frame(frame) == ("70B3D57ED005A1B2", b"\x01\x00\x01\xaa")
    assert p2p.decode_frame(b"\x01\x00\x01\xaa", "0011223344556677") == ("0011223344556677", b"\x01\x00\x01\xaa")
    with pytest.raises(ValueError, match="too short"):
        p2p.decode_frame(b"\x00" * 8)
    with pytest.raises(ValueError, match="16 hex"):
        p2p.encode_frame("0011", b"")
