"""Write operations: what the service, the delivery agent and the CLI commit.

Each ``op_*`` returns an :data:`Op`, a closure over plain data (snapshotted on the
event loop) that the writer runs inside a batch's transaction
(:meth:`~collector.service.store.queries.Store.apply`). Consecutive
:class:`IngestWrite` s of a batch are written with a few multi-row statements.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson

Op = Callable[[sqlite3.Connection], Any]


def message_header(m: Any) -> dict:
    """An open message's state without its fragments (those are rows of ``fragments``):
    what :func:`op_ingest` writes for each message a fragment changed, so the cost per request stays
    constant however many fragments the message holds.

    A message the ingest path closed carries ``closed`` and ``close_reason``: its row
    stays in ``open_messages`` until the aggregator has assembled it and recorded the
    outcome (:func:`op_closed`); after a restart such a row is assembled then
    (:meth:`Store.restore_state` marks it ``"pending_close"``).

    A v2 message held open for its repair adds ``hold`` and ``released``
    (``docs/repair.md``, "The deadline follows the repair state")."""
    h = {"uid": m.uid, "dev_eui": m.dev_eui, "msg_id": m.msg_id, "opened": m.opened, "deadline": m.deadline,
         "count": m.count, "size": m.size, "closed": m.closed, "close_reason": m.close_reason,
         "received": len(m.fragments)}
    if m.hold is not None or m.released:
        h["hold"] = m.hold
        h["released"] = m.released
    return h


_SQL_FRAGMENT = ("INSERT INTO fragments(arrived, message_uid, dev_eui, idx, status, source, received_ms, uplink) "
                 "VALUES (?,?,?,?,?,?,?,?)")
_SQL_OPEN = ("INSERT OR REPLACE INTO open_messages(uid, dev_eui, msg_id, opened, deadline, count, received, state) "
             "VALUES (?,?,?,?,?,?,?,?)")
_SQL_SEQ = "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)"


def _header_row(header: dict) -> tuple:
    hold = header.get("hold")
    # the column says when the message closes (the API shows it): later while it is held
    deadline = header["deadline"] if hold is None else max(hold, header["deadline"])
    return (header["uid"], header["dev_eui"], header["msg_id"], header["opened"], deadline,
            header["count"], header["received"], orjson.dumps(header).decode())


class IngestWrite:
    """What one ingest request commits: its fragment row, the new state of the
    messages it changed (:func:`message_header` dicts, snapshotted on the event loop)
    and the next message sequence number. :meth:`Store.apply` writes consecutive ones
    of a batch with a few multi-row statements per table, and a message's state once
    per run of them (its last: the fragments of one message often share a batch);
    called alone it writes its own rows."""

    __slots__ = ("fragment", "headers", "next_seq")

    def __init__(self, fragment: tuple, headers: list[dict], next_seq: int | None):
        self.fragment = fragment
        self.headers = headers
        self.next_seq = next_seq

    def __call__(self, c: sqlite3.Connection) -> None:
        _write_ingest(c, [self])


def uplink_text(uplink: dict) -> str:
    """The stored form of an uplink (``Uplink.to_dict()``); raises TypeError for a
    string that is not valid Unicode."""
    return orjson.dumps(uplink).decode()


def op_ingest(arrived: float, message_uid: str | None, index: int | None, status: str, uplink: dict,
              headers: Iterable[dict] = (), next_seq: int | None = None, text: str | None = None) -> IngestWrite:
    """One ingest request's write: its fragment row, the state of the messages it
    changed (``headers``, :func:`message_header` each; a message's fragments are the
    ``accepted`` rows of ``fragments`` with its uid) and the next message sequence
    number; ``text``: :func:`uplink_text` of ``uplink`` when the caller has it already."""
    row = (arrived, message_uid, uplink["dev_eui"], index, status, uplink.get("source"), uplink.get("received_ms"),
           uplink_text(uplink) if text is None else text)
    return IngestWrite(row, list(headers), next_seq)


_MULTI_MAX = 128


def _insert_rows(c: sqlite3.Connection, sql: str, width: int, rows: list[tuple]) -> None:
    """``sql`` (an ``INSERT ... VALUES`` of one row) for every row, as few
    multi-row statements: runs of 128, 64, ..., 1 rows, so a batch takes a handful
    of SQLite steps (the writer thread releases and retakes the GIL around each
    step; ``executemany`` would do that once per row) from a few cached statements."""
    i, n = 0, len(rows)
    size = _MULTI_MAX
    while i < n:
        while size > n - i:
            size //= 2
        chunk = rows[i:i + size]
        c.execute(_values_sql(sql, width, size), [v for r in chunk for v in r] if size > 1 else chunk[0])
        i += size


@functools.lru_cache(maxsize=64)
def _values_sql(sql: str, width: int, n: int) -> str:
    one = "(" + ",".join("?" * width) + ")"
    return sql.replace(" VALUES " + one, " VALUES " + ",".join([one] * n))


def _write_ingest(c: sqlite3.Connection, writes: list[IngestWrite]) -> None:
    _insert_rows(c, _SQL_FRAGMENT, 8, [w.fragment for w in writes])
    # a message changed by several writes of the run: its last state only (the rows
    # replace each other in one transaction), serialised here, off the event loop
    last = {h["uid"]: h for w in writes for h in w.headers}
    if last:
        _insert_rows(c, _SQL_OPEN, 8, [_header_row(h) for h in last.values()])
    seq = None
    for w in writes:
        if w.next_seq is not None:
            seq = w.next_seq
    if seq is not None:
        c.execute(_SQL_SEQ, (str(seq),))

@dataclass(frozen=True, slots=True)
class ClosedMessage:
    """A closed message and its outcome, serialised for the store (plain, picklable
    data: it may be prepared in another process)."""

    uid: str
    dev_eui: str
    msg_id: int
    opened: float
    closed: float | None
    #: "complete", "partial" or "incident"
    state: str
    close_reason: str | None
    fragments_expected: int | None
    fragments_received: int
    #: ``Outcome.to_dict()`` and the message without its fragments, as JSON text
    outcome_json: str
    message_json: str
    xml: bytes | None
    idempotency_key: str | None
    code: str | None
    detail: str | None


def closed_message(msg: dict, outcome: dict, xml: bytes | None) -> ClosedMessage:
    """A closed message (``Message.to_dict()``) and its outcome (``Outcome.to_dict()``)
    as :func:`op_closed` records them."""
    out = {k: v for k, v in outcome.items() if k != "xml"}
    header = {k: v for k, v in msg.items() if k != "fragments"}
    return ClosedMessage(msg["uid"], msg["dev_eui"], msg["msg_id"], msg["opened"], msg["closed"], outcome["state"],
                         msg["close_reason"], outcome.get("fragmentsExpected"), len(msg["fragments"]),
                         orjson.dumps(out).decode(), orjson.dumps(header).decode(), xml,
                         outcome.get("idempotencyKey"), outcome.get("code"), outcome.get("detail"))


def op_closed(cm: ClosedMessage, now: float) -> Op:
    """Record a closed message and its outcome (:func:`closed_message`): a document
    queued for delivery, or an incident. The message's fragments are kept once, in
    the outcome; closing a message twice is a no-op."""
    delivery = "pending" if cm.xml is not None else None
    mrow = (cm.uid, cm.dev_eui, cm.msg_id, cm.opened, cm.closed if cm.closed is not None else now, cm.state,
            cm.close_reason, cm.fragments_expected, cm.fragments_received, delivery, cm.outcome_json,
            cm.message_json)

    def run(c: sqlite3.Connection) -> None:
        c.execute("DELETE FROM open_messages WHERE uid = ?", (cm.uid,))
        cur = c.execute(
            "INSERT OR IGNORE INTO messages(uid, dev_eui, msg_id, opened, closed, state, close_reason, "
            "fragments_expected, fragments_received, delivery, outcome, message) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            mrow)
        if cur.rowcount == 0:
            return  # already recorded (closed twice is a no-op)
        if cm.xml is not None:
            c.execute("INSERT OR IGNORE INTO documents(uid, dev_eui, idempotency_key, xml, state, created, next_attempt) "
                      "VALUES (?,?,?,?, 'pending', ?, ?)",
                      (cm.uid, cm.dev_eui, cm.idempotency_key, cm.xml, now, now))
        if cm.state == "incident":
            c.execute("INSERT OR IGNORE INTO incidents(uid, dev_eui, msg_id, created, code, detail, outcome) "
                      "VALUES (?,?,?,?,?,?,?)",
                      (cm.uid, cm.dev_eui, cm.msg_id, now, cm.code or "unknown", cm.detail, cm.outcome_json))
    return run


def op_incident(uid: str | None, dev_eui: str, msg_id: int | None, now: float, code: str, detail: str,
                extra: dict | None = None) -> Op:
    """An incident that is not the outcome of a closed message (e.g. a device cap hit)."""
    text = json.dumps({"code": code, "detail": detail, **(extra or {})}, separators=(",", ":"))

    def run(c: sqlite3.Connection) -> None:
        c.execute("INSERT OR IGNORE INTO incidents(uid, dev_eui, msg_id, created, code, detail, outcome) "
                  "VALUES (?,?,?,?,?,?,?)", (uid, dev_eui, msg_id, now, code, detail, text))
    return run


@dataclass
class AttemptResult:
    uid: str
    at: float
    #: "delivered", "retry" or "dead"
    result: str
    status: int | None = None
    error: str | None = None
    response: str | None = None
    duration: float | None = None
    next_attempt: float | None = None
    dead_reason: str | None = None


def op_attempt(r: AttemptResult) -> Op:
    def run(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO attempts(uid, at, status, error, result, duration) VALUES (?,?,?,?,?,?)",
                  (r.uid, r.at, r.status, r.error, r.result, r.duration))
        if r.result == "delivered":
            c.execute("UPDATE documents SET state='delivered', attempts=attempts+1, delivered_at=?, last_status=?, "
                      "last_error=NULL, last_response=? WHERE uid=?", (r.at, r.status, r.response, r.uid))
        elif r.result == "dead":
            c.execute("UPDATE documents SET state='dead', attempts=attempts+1, dead_at=?, dead_reason=?, "
                      "last_status=?, last_error=?, last_response=? WHERE uid=?",
                      (r.at, r.dead_reason, r.status, r.error, r.response, r.uid))
        else:
            c.execute("UPDATE documents SET attempts=attempts+1, next_attempt=?, last_status=?, last_error=?, "
                      "last_response=? WHERE uid=?", (r.next_attempt, r.status, r.error, r.response, r.uid))
        c.execute("UPDATE messages SET delivery=? WHERE uid=?",
                  ({"delivered": "delivered", "dead": "dead"}.get(r.result, "pending"), r.uid))
    return run


def op_retry_dead(uids: list[str] | None, now: float) -> Op:
    """Put dead letters back in the queue (all when ``uids`` is None); their maximum
    age counts again from ``now``."""
    def run(c: sqlite3.Connection) -> int:
        if uids is None:
            targets = [r[0] for r in c.execute("SELECT uid FROM documents WHERE state='dead'")]
        else:
            targets = [u for u in uids if c.execute(
                "SELECT 1 FROM documents WHERE uid=? AND state='dead'", (u,)).fetchone()]
        for u in targets:
            c.execute("UPDATE documents SET state='pending', created=?, next_attempt=?, dead_at=NULL, dead_reason=NULL "
                      "WHERE uid=?", (now, now, u))
            c.execute("UPDATE messages SET delivery='pending' WHERE uid=?", (u,))
        return len(targets)
    return run


def op_device(dev_eui: str, token: str | None, name: str | None, now: float) -> Op:
    def run(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO devices(dev_eui, token, name, updated) VALUES (?,?,?,?) "
                  "ON CONFLICT(dev_eui) DO UPDATE SET token=excluded.token, "
                  "name=COALESCE(excluded.name, devices.name), updated=excluded.updated",
                  (dev_eui, token, name, now))
    return run


def op_device_remove(dev_eui: str) -> Op:
    def run(c: sqlite3.Connection) -> int:
        return c.execute("DELETE FROM devices WHERE dev_eui=?", (dev_eui,)).rowcount
    return run


def op_prune(before: float) -> Op:
    """Delete delivered documents (and their attempts), closed messages whose
    document was delivered or that made none, incidents (with the copy of the
    fragments they keep), and fragments, all older than ``before``. Open messages
    and dead letters are kept."""
    def run(c: sqlite3.Connection) -> dict:
        # incidents too: one device's flood of broken messages must not grow the
        # database past the retention budget (they were never pruned)
        n_inc = c.execute("DELETE FROM incidents WHERE created < ?", (before,)).rowcount
        n_frag = c.execute("DELETE FROM fragments WHERE arrived < ? AND (message_uid IS NULL OR message_uid NOT IN "
                           "(SELECT uid FROM open_messages))", (before,)).rowcount
        old = [r[0] for r in c.execute("SELECT uid FROM documents WHERE state='delivered' AND delivered_at < ?",
                                       (before,))]
        for u in old:
            c.execute("DELETE FROM attempts WHERE uid=?", (u,))
            c.execute("DELETE FROM documents WHERE uid=?", (u,))
        n_msg = c.execute("DELETE FROM messages WHERE closed < ? AND (delivery='delivered' OR delivery IS NULL)",
                          (before,)).rowcount
        return {"fragments": n_frag, "documents": len(old), "messages": n_msg, "incidents": n_inc}
    return run


def run_ops(c: sqlite3.Connection, ops: list[Op]) -> list[Any]:
    """Run ``ops`` in order; consecutive :class:`IngestWrite` s go in together."""
    results: list[Any] = []
    run: list[IngestWrite] = []
    for op in ops:
        if type(op) is IngestWrite:
            run.append(op)
            results.append(None)
            continue
        if run:
            _write_ingest(c, run)
            run = []
        results.append(op(c))
    if run:
        _write_ingest(c, run)
    return results


def together(ops: list[Op]) -> Op:
    """One op that runs ``ops`` (so they commit or fail as one); returns their results."""
    def run(c: sqlite3.Connection) -> list[Any]:
        return [op(c) for op in ops]
    return run
