"""``POST /admin/clock`` hands over the downlinks due by the new time before it
answers, so whoever drives virtual time (the scenario runner's closed loop) reads the
network server right after, without waiting on the downlink agent's own loop."""

from __future__ import annotations

from collector.core import wire, wire2
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, wait_until
from collector.testing.netserver_stub import NetServerConfig, NetServerThread
from devicesim.formats import AppUplink, uplink_body

DATA = wire.encode_record(example_record())
T0_NS = 1_800_000_000 * 10**9
CS_TOKEN = "cs-token"
EUI = "00000000000003B1"


def test_the_clock_answers_after_the_retry_due_reached_the_network_server(tmp_path):
    with NetServerThread(NetServerConfig([], [CS_TOKEN], [])) as ns, \
            LiveService(tmp_path / "c.db", stub=False, chirpstack_api_url=ns.url, chirpstack_api_token=CS_TOKEN,
                        downlink_backoff_base=5.0) as live:
        assert ns.stub is not None
        ns.stub.fail_next = 1  # the first hand-over fails: the retry is due 5 s later
        frags = wire2.encode_message(DATA, 3, 115, 0)
        for n, payload in enumerate([frags[0], wire2.poll(3, len(frags), len(frags))]):
            path, body = uplink_body("chirpstack", AppUplink(EUI, 17, n, payload, T0_NS + n * 10**9, dr=3, sf=9,
                                                             uid=n))
            assert live.post(path, body).status == 202
        wait_until(lambda: len(ns.stub.requests) >= 1, what="the first hand-over")
        assert ns.stub.requests[0]["status"] == 503 and not ns.stub.queue
        ans = live.post("/admin/clock", {"advance": 5.0})
        assert ans.status == 200 and ans.json()["downlinks"] == 1
        # no waiting: the retry was made before the clock answered
        assert EUI in ns.stub.queue
        need = wire2.decode_downlink(ns.stub.queue[EUI]["payload"])
        assert need and need[0].msg_id == 3
