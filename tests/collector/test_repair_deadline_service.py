"""The deadline of a v2 message follows the repair state (docs/repair.md, "The
deadline follows the repair state") through the running service and the stand-in
ChirpStack device queue: the ACK for a message already closed, and the release of a
held message once the collector's NEED repeats are used up."""

from __future__ import annotations

from collector.core import wire, wire2
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, wait_until
from collector.testing.netserver_stub import NetServerConfig, NetServerThread
from devicesim.formats import AppUplink, uplink_body

DATA = wire.encode_record(example_record())
T0_NS = 1_800_000_000 * 10**9
CS_TOKEN = "cs-token"
EUI = "00000000000003B2"


def test_a_need_repeated_for_a_message_already_closed_goes_out_as_ack(tmp_path):
    """docs/repair.md, "The deadline follows the repair state": the repair state would
    repeat the NEED the device did not hear, but the reassembler closed the message
    (here at a short repair_hold): the device gets ACK, so it forgets the message
    instead of sending rows into a closed one."""
    with NetServerThread(NetServerConfig([], [CS_TOKEN], [])) as ns, \
            LiveService(tmp_path / "c.db", stub=False, chirpstack_api_url=ns.url, chirpstack_api_token=CS_TOKEN,
                        repair_hold=3000) as live:
        assert ns.stub is not None
        frags = wire2.encode_message(DATA, 3, 115, 0)  # k = 6

        def send(n: int, payload: bytes) -> None:
            path, body = uplink_body("chirpstack", AppUplink(EUI, 17, n, payload, T0_NS + n * 10**9, dr=3, sf=9,
                                                             uid=n))
            assert live.post(path, body).status == 202

        for n, payload in enumerate([*frags[:4], wire2.poll(3, 6, 6)]):
            send(n, payload)
        wait_until(lambda: EUI in ns.stub.queue, what="the NEED at the network server")
        assert [type(c) for c in wire2.decode_downlink(ns.stub.pop(EUI)["payload"])] == [wire2.Need]
        live.advance(3600)  # past repair_hold: message 3 closes short
        (m,) = live.get(f"/api/messages?device={EUI}").json()["messages"]
        assert m["state"] != "open"
        later = wire2.encode_message(DATA, 4, 115, 0)
        send(10, later[0])  # its receive windows carried the NEED (lost)
        send(11, later[1])  # no row of message 3: the NEED was not heard
        wait_until(lambda: EUI in ns.stub.queue, what="the answer at the network server")
        assert wire2.decode_downlink(ns.stub.queue[EUI]["payload"]) == [wire2.Ack(3)]


def test_a_held_message_closes_once_its_need_repeats_are_used_up(tmp_path):
    """The device keeps sending newer records but never hears the NEED for message 3:
    after the repeats the collector stops asking, and the message it held past its
    adaptive deadline closes at the next deadline pass (not at repair_hold)."""
    with NetServerThread(NetServerConfig([], [CS_TOKEN], [])) as ns, \
            LiveService(tmp_path / "c.db", stub=False, chirpstack_api_url=ns.url,
                        chirpstack_api_token=CS_TOKEN, repair_need_repeats=3) as live:
        assert ns.stub is not None
        n = 0

        def send(payload: bytes) -> None:
            nonlocal n
            n += 1
            path, body = uplink_body("chirpstack", AppUplink(EUI, 17, n, payload, T0_NS + n * 10**9, dr=3, sf=9,
                                                             uid=n))
            assert live.post(path, body).status == 202
            live.advance(0)  # hands over what became due; the device hears none of it
            ns.stub.pop(EUI)

        def state() -> str:
            (m,) = [m for m in live.get(f"/api/messages?device={EUI}").json()["messages"] if m["msgId"] == 3]
            return m["state"]

        for payload in [*wire2.encode_message(DATA, 3, 115, 0)[:4], wire2.poll(3, 6, 6)]:
            send(payload)
        live.advance(3600)  # far past its adaptive deadline: held
        assert state() == "open"
        for msg_id in (4, 5):
            for payload in wire2.encode_message(DATA, msg_id, 115, 0):
                if state() == "open":
                    send(payload)
        assert state() != "open"
        d = live.get(f"/api/devices/{EUI}/repair").json()
        assert d["needs_repeated"] == 3
        assert live.advance(0)["now"] < 1_800_000_000 + 21600  # not at the outer bound
