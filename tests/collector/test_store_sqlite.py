"""The SQLite store: group commit, restore after restart, retention.

The writes are the ones the service commits: :func:`op_ingest` built from a real
reassembler's result exactly as the ingest path builds it, :func:`op_closed` of what the
aggregator assembled, :func:`op_attempt` of the delivery agent."""

from __future__ import annotations

import asyncio
import os
import stat

from collector.core import wire
from collector.core.reassembly import Message, Reassembler, Settings
from collector.core.uplink import Uplink
from collector.service.aggregator import close_message
from collector.service.store import (
    AttemptResult,
    GroupCommitter,
    IngestWrite,
    Store,
    StoreUnavailable,
    message_header,
    op_attempt,
    op_closed,
    op_device,
    op_ingest,
    op_prune,
    op_retry_dead,
    uplink_text,
)
from collector.testing.examples import example_record

DEV = "70B3D57ED005A1B2"
T0 = 1_800_000_000.0


class Feeder:
    """Fragments through a reassembler, turned into the ingest path's write."""

    def __init__(self) -> None:
        self.reasm = Reassembler(Settings(message_timeout=900))

    def fragments(self, msg_id: int) -> list[bytes]:
        return wire.fragment(msg_id, wire.encode_record(example_record()), 115)

    def ingest(self, payload: bytes, now: float, dev: str = DEV) -> tuple[IngestWrite, Message, list[Message]]:
        up = Uplink(dev, 16, payload, int(now * 1000), fcnt=0, data_rate="SF9BW125", region="EU868",
                    source="generic")
        row = up.to_dict()
        res = self.reasm.feed(up, now)
        msg = res.message
        assert msg is not None
        headers = [message_header(msg)] if res.status == "accepted" else []
        headers.extend(message_header(m) for m in res.closed if m is not msg)
        op = op_ingest(now, msg.uid, payload[1], res.status, row, headers, self.reasm.next_seq, uplink_text(row))
        return op, msg, res.closed


def test_concurrent_writes_share_commits(tmp_path):
    store = Store(tmp_path / "s.db")
    feeder = Feeder()
    # the first fragment of 300 messages of 300 devices
    ops = [feeder.ingest(feeder.fragments(i % 256)[0], T0 + i, f"70B3D57ED005{i:04X}")[0] for i in range(300)]
    batches: list[int] = []

    async def main() -> None:
        gc = GroupCommitter(store, max_batch=500, on_commit=lambda n, s: batches.append(n))
        gc.start()
        await asyncio.gather(*(gc.submit(op) for op in ops))
        await gc.close()

    asyncio.run(main())
    assert sum(batches) == 300
    assert len(batches) < 300  # requests were committed together
    counts = store.counts()
    assert counts["openMessages"] == 300 and counts["fragments"] == 300
    assert store.meta("next_seq") == str(feeder.reasm.next_seq) == "301"
    assert stat.S_IMODE(os.stat(tmp_path / "s.db").st_mode) == 0o600
    store.close()


def test_a_failing_op_fails_only_its_own_request(tmp_path):
    store = Store(tmp_path / "s.db")
    feeder = Feeder()
    first, second = feeder.fragments(1)[:2]
    op_a = feeder.ingest(first, T0)[0]
    op_b = feeder.ingest(second, T0 + 1)[0]

    def bad(c):
        c.execute("INSERT INTO no_such_table VALUES (1)")

    async def main():
        gc = GroupCommitter(store)
        gc.start()
        results = await asyncio.gather(gc.submit(op_a), gc.submit(bad), gc.submit(op_b), return_exceptions=True)
        await gc.close()
        return results

    ok1, err, ok2 = asyncio.run(main())
    assert isinstance(err, StoreUnavailable) and ok1 is None and ok2 is None
    assert store.counts()["fragments"] == 2
    (uid,) = store.open_fragments()
    assert [f["index"] for f in store.open_fragments()[uid]] == [0, 1]
    store.close()


def test_a_batch_writes_each_message_s_last_state(tmp_path):
    """The fragments of one message committed in one batch leave its last state (the
    writer keeps one header per message and batch): restored, it equals the message
    in memory, open or closed by the batch's last fragment."""
    store = Store(tmp_path / "s.db")
    feeder = Feeder()
    first = [feeder.ingest(f, T0 + i) for i, f in enumerate(feeder.fragments(1)[:3])]
    store.apply([op for op, _, _ in first])
    in_memory = first[-1][1]
    msgs, seq = store.restore_state(now=T0 + 10, duplicate_window=3600)
    (restored,) = (Message.from_dict(m) for m in msgs)
    assert restored == in_memory and restored.count == 6 and restored.size == 115
    assert sorted(restored.fragments) == [0, 1, 2]
    # the other three in one batch: the last one closes the message
    rest = [feeder.ingest(f, T0 + 20 + i) for i, f in enumerate(feeder.fragments(1)[3:])]
    assert [m.close_reason for m in rest[-1][2]] == ["complete"]
    store.apply([op for op, _, _ in rest])
    msgs, _ = store.restore_state(now=T0 + 30, duplicate_window=3600)
    (d,) = msgs
    assert d["pending_close"] and d["closed"] == T0 + 22 and d["close_reason"] == "complete"
    assert Message.from_dict(d) == in_memory
    store.close()


def test_restore_state_and_prune(tmp_path):
    store = Store(tmp_path / "s.db")
    feeder = Feeder()
    # message 1: two fragments of six, open; message 2: all six, closed by the last one
    open_uid = None
    for i, f in enumerate(feeder.fragments(1)[:2]):
        op, msg, _ = feeder.ingest(f, T0 + i)
        store.write(op)
        open_uid = msg.uid
    closed: list[Message] = []
    for i, f in enumerate(feeder.fragments(2)):
        op, msg, now_closed = feeder.ingest(f, T0 + 10 + i)
        store.write(op)
        closed.extend(now_closed)
    assert [m.close_reason for m in closed] == ["complete"]
    done_uid = closed[0].uid
    # the aggregator's record of the closed message
    store.write(op_closed(close_message(closed[0]), T0 + 100))
    store.write(op_device(DEV, "t", "n", 0))

    msgs, seq = store.restore_state(now=T0 + 200, duplicate_window=3600)
    assert {m["uid"] for m in msgs} == {open_uid, done_uid} and seq == feeder.reasm.next_seq
    held = {m["uid"]: [f["index"] for f in m["fragments"]] for m in msgs}
    assert held == {open_uid: [0, 1], done_uid: [0, 1, 2, 3, 4, 5]}
    again = Reassembler(Settings(message_timeout=900))
    again.load(msgs, seq)
    assert again.open_count(DEV) == 1
    msgs, _ = store.restore_state(now=T0 + 10_000, duplicate_window=3600)
    assert [m["uid"] for m in msgs] == [open_uid]

    # a pending document is never pruned; a delivered one is, after the retention period
    assert store.get_document(done_uid)["state"] == "pending"
    assert store.write(op_prune(T0 + 10_000)) == {"fragments": 6, "documents": 0, "messages": 0, "incidents": 0}
    # the delivery agent's record of a retry, then of the upload that was accepted
    store.write(op_attempt(AttemptResult(done_uid, T0 + 120, "retry", status=503, next_attempt=T0 + 140)))
    assert store.write(op_prune(T0 + 10_000))["documents"] == 0
    store.write(op_attempt(AttemptResult(done_uid, T0 + 150, "delivered", status=201)))
    assert store.get_message(done_uid)["delivery"] == "delivered"
    assert store.write(op_prune(T0 + 10_000)) == {"fragments": 0, "documents": 1, "messages": 1, "incidents": 0}
    assert store.counts()["fragments"] == 2  # the open message keeps its fragments
    assert store.device_token("70b3d57ed005a1b2") == "t"
    store.close()


def test_a_dead_letter_goes_back_in_the_queue(tmp_path):
    store = Store(tmp_path / "s.db")
    feeder = Feeder()
    closed: list[Message] = []
    for i, f in enumerate(feeder.fragments(3)):
        op, _, now_closed = feeder.ingest(f, T0 + i)
        store.write(op)
        closed.extend(now_closed)
    uid = closed[0].uid
    store.write(op_closed(close_message(closed[0]), T0 + 10))
    store.write(op_closed(close_message(closed[0]), T0 + 11))  # closing twice records it once
    assert store.counts()["documents"]["pending"] == 1
    assert store.write(op_retry_dead(None, T0 + 20)) == 0  # nothing dead yet
    store.write(op_attempt(AttemptResult(uid, T0 + 25, "dead", status=400, dead_reason="rejected")))
    assert store.get_document(uid)["state"] == "dead"
    assert store.write(op_retry_dead([uid, "no-such"], T0 + 30)) == 1
    doc = store.get_document(uid)
    assert doc["state"] == "pending" and doc["deadReason"] is None
    store.close()
