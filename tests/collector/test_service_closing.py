"""Closing off the request path: a message an uplink completes is committed as
closed before the 202 and assembled afterwards (in-process or in the worker
process); one that was closed but not assembled when the service stopped is
assembled at the next start."""

from __future__ import annotations

import asyncio
import base64

from collector.core import wire
from collector.core.reassembly import Message, Reassembler, Settings
from collector.core.uplink import Uplink
from collector.service.aggregator import Assembler, close_message
from collector.service.store import Store, message_header, op_ingest
from collector.testing.examples import example_record
from collector.testing.harness import LiveService

DEV = "70B3D57ED005A1C3"


def closed_messages(n: int) -> list[Message]:
    reasm = Reassembler(Settings(message_timeout=3600))
    out: list[Message] = []
    for m in range(n):
        rec = example_record()
        rec.record_seq = 500 + m
        frags = wire.fragment(m, wire.encode_record(rec), 115)
        if m % 3 == 2:
            frags = frags[1:]  # fragment 0 lost: an incident once closed
        for i, f in enumerate(frags):
            up = Uplink(DEV, 16, f, 1_800_000_000_000 + m * 1000 + i, fcnt=m * 10 + i, data_rate="SF9BW125",
                        region="EU868", gateway="gw", rssi=-90.0, snr=7.0, source="ttn")
            out.extend(reasm.feed(up, 1_800_000_000.0 + m).closed)
    out.extend(reasm.expire(1_800_000_000.0 + 10**6))
    return out


def test_the_worker_assembles_exactly_as_in_process_and_its_failure_falls_back():
    msgs = closed_messages(9)
    assert {m.close_reason for m in msgs} == {"complete", "deadline"}
    local = [close_message(m) for m in msgs]
    assert {c.state for c in local} == {"complete", "incident"}

    async def main() -> None:
        a = Assembler(offload_rate=0)  # always the worker
        try:
            assert await a.run(msgs) == local
            assert a.offloaded == len(msgs) and a.worker_running
            a._proc.kill()  # the worker dies: the batch is assembled in-process
            await a._proc.wait()
            assert await a.run(msgs) == local
            assert a.inline == len(msgs) and not a.worker_running
        finally:
            await a.close()

    asyncio.run(main())


def test_a_message_closed_but_not_assembled_is_assembled_at_start(tmp_path):
    db = tmp_path / "c.db"
    # exactly what the ingest path commits before each 202, and nothing after
    reasm = Reassembler(Settings(message_timeout=900))
    store = Store(db)
    now = 1_800_000_000.0
    uid = None
    for i, f in enumerate(wire.fragment(7, wire.encode_record(example_record()), 115)):
        up = Uplink(DEV, 16, f, int(now * 1000) + i, fcnt=i, data_rate="SF9BW125", region="EU868", source="generic")
        res = reasm.feed(up, now + i)
        msg = res.message
        headers = [message_header(msg)] + [message_header(m) for m in res.closed if m is not msg]
        store.write(op_ingest(now + i, msg.uid, i, res.status, up.to_dict(), headers, reasm.next_seq))
        uid = msg.uid
    assert msg.closed is not None and store.counts()["openMessages"] == 1  # closed, not assembled
    store.close()

    with LiveService(db, clock_start=now + 60, stub=False) as live:
        m = live.get(f"/api/messages/{uid}").json()
        assert (m["state"], m["closeReason"], m["fragmentsReceived"], m["delivery"]) == \
            ("complete", "complete", 6, "pending")
        status = live.get("/api/status").json()
        assert status["openMessages"] == 0 and status["documents"]["pending"] == 1
        # a repeated fragment of it is still recognised as a duplicate
        path = "/uplink"
        body = {"devEui": DEV, "fPort": 16, "payload": base64.b64encode(
            wire.fragment(7, wire.encode_record(example_record()), 115)[2]).decode()}
        r = live.post(path, body)
        assert r.status == 202 and r.json()["status"] == "duplicate"
