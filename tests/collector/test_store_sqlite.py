"""The SQLite store: group commit, restore after restart, retention."""

from __future__ import annotations

import asyncio
import os
import stat

from collector.service.store import (
    GroupCommitter,
    Store,
    StoreUnavailable,
    op_close,
    op_device,
    op_open,
    op_prune,
)


def open_msg(uid: str, dev: str = "70B3D57ED005A1B2", opened: float = 0.0) -> dict:
    return {"uid": uid, "dev_eui": dev, "msg_id": 1, "opened": opened, "deadline": opened + 900, "count": None,
            "size": None, "closed": None, "close_reason": None, "received": 0}


def test_concurrent_writes_share_commits(tmp_path):
    store = Store(tmp_path / "s.db")
    batches: list[int] = []

    async def main() -> None:
        gc = GroupCommitter(store, max_batch=500, on_commit=lambda n, s: batches.append(n))
        gc.start()
        await asyncio.gather(*(gc.submit(op_open(open_msg(f"m{i}"), i + 1)) for i in range(300)))
        await gc.close()

    asyncio.run(main())
    assert sum(batches) == 300
    assert len(batches) < 300  # requests were committed together
    assert store.counts()["openMessages"] == 300
    assert store.meta("next_seq") == "300"
    assert stat.S_IMODE(os.stat(tmp_path / "s.db").st_mode) == 0o600
    store.close()


def test_a_failing_op_fails_only_its_own_request(tmp_path):
    store = Store(tmp_path / "s.db")

    def bad(c):
        c.execute("INSERT INTO no_such_table VALUES (1)")

    async def main():
        gc = GroupCommitter(store)
        gc.start()
        results = await asyncio.gather(gc.submit(op_open(open_msg("a"), 2)), gc.submit(bad),
                                       gc.submit(op_open(open_msg("b"), 3)), return_exceptions=True)
        await gc.close()
        return results

    ok1, err, ok2 = asyncio.run(main())
    assert isinstance(err, StoreUnavailable) and ok1 is None and ok2 is None
    assert store.counts()["openMessages"] == 2
    store.close()


def test_restore_state_and_prune(tmp_path):
    store = Store(tmp_path / "s.db")
    store.write(op_open(open_msg("open-1"), 5))
    closed = {**open_msg("done-1"), "closed": 100.0, "close_reason": "complete", "fragments": []}
    outcome = {"state": "complete", "idempotencyKey": "K", "fragmentsExpected": 1}
    store.write(op_close(closed, outcome, b"<x/>", 100.0))
    store.write(op_device("70B3D57ED005A1B2", "t", "n", 0))
    msgs, seq = store.restore_state(now=200.0, duplicate_window=3600)
    assert {m["uid"] for m in msgs} == {"open-1", "done-1"} and seq == 5
    msgs, _ = store.restore_state(now=10_000.0, duplicate_window=3600)
    assert [m["uid"] for m in msgs] == ["open-1"]
    # a pending document is never pruned; a delivered one is, after the retention period
    assert store.write(op_prune(10_000.0)) == {"fragments": 0, "documents": 0, "messages": 0}
    store.apply([lambda c: c.execute("UPDATE documents SET state='delivered', delivered_at=150"),
                 lambda c: c.execute("UPDATE messages SET delivery='delivered'")])
    assert store.write(op_prune(10_000.0)) == {"fragments": 0, "documents": 1, "messages": 1}
    assert store.device_token("70b3d57ed005a1b2") == "t"
    store.close()
