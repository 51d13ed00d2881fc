"""The collector's durable store: one SQLite database file in WAL mode.

It holds the fragments that arrived, open-message state (the reassembler's
:meth:`Message.to_dict`, rewritten in the same transaction as each fragment), closed
messages, documents awaiting delivery, delivery attempts, incidents, dead letters and
the device registry.

Writes go through :class:`GroupCommitter`: requests put their operations on a queue,
one writer thread applies everything queued in a single transaction
(``synchronous=FULL``), and each request's future resolves only after that commit.
Concurrent requests so share one fsync. Reads use their own connection (WAL lets
them run beside the writer).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from collector.core.timefmt import format_ms

log = logging.getLogger("collector.store")

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS fragments (
    id INTEGER PRIMARY KEY,
    arrived REAL NOT NULL,
    message_uid TEXT,
    dev_eui TEXT NOT NULL,
    idx INTEGER,
    status TEXT NOT NULL,
    source TEXT,
    received_ms INTEGER,
    uplink TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS fragments_arrived ON fragments(arrived);
CREATE INDEX IF NOT EXISTS fragments_message ON fragments(message_uid);
CREATE TABLE IF NOT EXISTS open_messages (
    uid TEXT PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    msg_id INTEGER NOT NULL,
    opened REAL NOT NULL,
    deadline REAL NOT NULL,
    count INTEGER,
    received INTEGER NOT NULL,
    state TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS messages (
    uid TEXT PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    msg_id INTEGER NOT NULL,
    opened REAL NOT NULL,
    closed REAL NOT NULL,
    state TEXT NOT NULL,
    close_reason TEXT,
    fragments_expected INTEGER,
    fragments_received INTEGER NOT NULL,
    delivery TEXT,
    outcome TEXT NOT NULL,
    message TEXT
);
CREATE INDEX IF NOT EXISTS messages_device ON messages(dev_eui, closed);
CREATE INDEX IF NOT EXISTS messages_closed ON messages(closed);
CREATE TABLE IF NOT EXISTS documents (
    uid TEXT PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    xml BLOB,
    state TEXT NOT NULL,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    delivered_at REAL,
    dead_at REAL,
    dead_reason TEXT,
    last_status INTEGER,
    last_error TEXT,
    last_response TEXT
);
CREATE INDEX IF NOT EXISTS documents_due ON documents(state, next_attempt);
CREATE TABLE IF NOT EXISTS attempts (
    id INTEGER PRIMARY KEY,
    uid TEXT NOT NULL,
    at REAL NOT NULL,
    status INTEGER,
    error TEXT,
    result TEXT NOT NULL,
    duration REAL
);
CREATE INDEX IF NOT EXISTS attempts_uid ON attempts(uid);
CREATE TABLE IF NOT EXISTS incidents (
    id INTEGER PRIMARY KEY,
    uid TEXT UNIQUE,
    dev_eui TEXT NOT NULL,
    msg_id INTEGER,
    created REAL NOT NULL,
    code TEXT NOT NULL,
    detail TEXT,
    outcome TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS devices (
    dev_eui TEXT PRIMARY KEY,
    token TEXT,
    name TEXT,
    updated REAL
);
"""


class StoreUnavailable(RuntimeError):
    """The store cannot take a write now (queue full, disk error); answer 503."""


def iso(t: float | None) -> str | None:
    """Clock seconds → RFC 3339 with milliseconds (None stays None)."""
    return None if t is None else format_ms(int(round(t * 1000)))


def create_private_file(path: str | os.PathLike) -> None:
    """Create ``path`` with owner-only permissions (0600) when it does not exist."""
    p = Path(path)
    if str(p) == ":memory:" or p.exists():
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(p, os.O_CREAT | os.O_RDWR | os.O_EXCL, 0o600)
    os.close(fd)


def connect(path: str | os.PathLike, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection with the collector's pragmas (WAL, full sync, busy timeout)."""
    if not readonly:
        create_private_file(path)
    elif not Path(path).exists():
        raise FileNotFoundError(f"database {str(path)!r} does not exist")
    conn = sqlite3.connect(str(path), timeout=10.0, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 10000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        conn.executescript(_SCHEMA)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.execute("PRAGMA foreign_keys = ON")
    return conn


Op = Callable[[sqlite3.Connection], Any]


# --------------------------------------------------------------------------- write operations
# Each returns a closure over plain data (snapshotted on the event loop) that the
# writer thread runs inside the batch's transaction.


def op_fragment(arrived: float, message_uid: str | None, index: int | None, status: str, uplink: dict) -> Op:
    text = json.dumps(uplink, separators=(",", ":"))
    row = (arrived, message_uid, uplink["dev_eui"], index, status, uplink.get("source"), uplink.get("received_ms"), text)

    def run(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO fragments(arrived, message_uid, dev_eui, idx, status, source, received_ms, uplink) "
                  "VALUES (?,?,?,?,?,?,?,?)", row)
    return run


def message_header(m: Any) -> dict:
    """An open message's state without its fragments (those are rows of ``fragments``):
    what :func:`op_open` writes on every fragment, so the cost per request stays
    constant however many fragments the message holds.

    A message the ingest path closed carries ``closed`` and ``close_reason``: its row
    stays in ``open_messages`` until the aggregator has assembled it and recorded the
    outcome (:func:`op_close`); after a restart such a row is assembled then
    (:meth:`Store.restore_state` marks it ``"pending_close"``)."""
    return {"uid": m.uid, "dev_eui": m.dev_eui, "msg_id": m.msg_id, "opened": m.opened, "deadline": m.deadline,
            "count": m.count, "size": m.size, "closed": m.closed, "close_reason": m.close_reason,
            "received": len(m.fragments)}


_SQL_FRAGMENT = ("INSERT INTO fragments(arrived, message_uid, dev_eui, idx, status, source, received_ms, uplink) "
                 "VALUES (?,?,?,?,?,?,?,?)")
_SQL_OPEN = ("INSERT OR REPLACE INTO open_messages(uid, dev_eui, msg_id, opened, deadline, count, received, state) "
             "VALUES (?,?,?,?,?,?,?,?)")
_SQL_SEQ = "INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)"


def _header_row(header: dict) -> tuple:
    return (header["uid"], header["dev_eui"], header["msg_id"], header["opened"], header["deadline"],
            header["count"], header["received"], orjson.dumps(header).decode())


class IngestWrite:
    """What one ingest request commits: its fragment row, the new state of the
    messages it changed (:func:`message_header`) and the next message sequence
    number. :meth:`Store.apply` writes consecutive ones of a batch with one
    ``executemany`` per table; called alone it writes its own rows."""

    __slots__ = ("fragment", "headers", "next_seq")

    def __init__(self, fragment: tuple, headers: list[tuple], next_seq: int | None):
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
    """The fragment (as :func:`op_fragment`) and the message headers (as
    :func:`op_open`) of one ingest request; ``text``: :func:`uplink_text` of
    ``uplink`` when the caller has it already."""
    row = (arrived, message_uid, uplink["dev_eui"], index, status, uplink.get("source"), uplink.get("received_ms"),
           uplink_text(uplink) if text is None else text)
    return IngestWrite(row, [_header_row(h) for h in headers], next_seq)


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
    headers = [h for w in writes for h in w.headers]
    if headers:
        _insert_rows(c, _SQL_OPEN, 8, headers)
    seq = None
    for w in writes:
        if w.next_seq is not None:
            seq = w.next_seq
    if seq is not None:
        c.execute(_SQL_SEQ, (str(seq),))


def op_open(header: dict, next_seq: int) -> Op:
    """Insert or replace the state of an open message (:func:`message_header`); its
    fragments are the ``accepted`` rows of ``fragments`` with its uid."""
    row = (header["uid"], header["dev_eui"], header["msg_id"], header["opened"], header["deadline"], header["count"],
           header["received"], json.dumps(header, separators=(",", ":")))

    def run(c: sqlite3.Connection) -> None:
        c.execute("INSERT OR REPLACE INTO open_messages(uid, dev_eui, msg_id, opened, deadline, count, received, state) "
                  "VALUES (?,?,?,?,?,?,?,?)", row)
        c.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('next_seq', ?)", (str(next_seq),))
    return run


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


def op_close(msg: dict, outcome: dict, xml: bytes | None, now: float) -> Op:
    """Record a closed message (``Message.to_dict()``) and its outcome
    (``Outcome.to_dict()``): a document queued for delivery, or an incident. The
    message's fragments are kept once, in the outcome."""
    return op_closed(closed_message(msg, outcome, xml), now)


def op_closed(cm: ClosedMessage, now: float) -> Op:
    """Record a :class:`ClosedMessage` (see :func:`op_close`)."""
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
    document was delivered or that made none, and fragments, all older than
    ``before``. Open messages, incidents and dead letters are kept."""
    def run(c: sqlite3.Connection) -> dict:
        n_frag = c.execute("DELETE FROM fragments WHERE arrived < ? AND (message_uid IS NULL OR message_uid NOT IN "
                           "(SELECT uid FROM open_messages))", (before,)).rowcount
        old = [r[0] for r in c.execute("SELECT uid FROM documents WHERE state='delivered' AND delivered_at < ?",
                                       (before,))]
        for u in old:
            c.execute("DELETE FROM attempts WHERE uid=?", (u,))
            c.execute("DELETE FROM documents WHERE uid=?", (u,))
        n_msg = c.execute("DELETE FROM messages WHERE closed < ? AND (delivery='delivered' OR "
                          "(delivery IS NULL AND state != 'incident'))", (before,)).rowcount
        return {"fragments": n_frag, "documents": len(old), "messages": n_msg}
    return run


def _run_ops(c: sqlite3.Connection, ops: list[Op]) -> list[Any]:
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


# --------------------------------------------------------------------------- the store


class Store:
    """Synchronous access to the database (the CLI uses it directly; the service
    through :class:`GroupCommitter` for writes and a reader thread for queries)."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._w = connect(self.path)
        self._r = connect(self.path, readonly=True)
        self._rlock = threading.Lock()
        self._wlock = threading.Lock()

    def close(self) -> None:
        for c in (self._w, self._r):
            with contextlib.suppress(sqlite3.Error):
                c.close()

    # ------------------------------------------------------------------ writes

    def apply(self, ops: list[Op]) -> list[Any]:
        """Run ``ops`` in one transaction and commit; returns each op's result.
        On failure the transaction is rolled back and the error raised."""
        with self._wlock:
            c = self._w
            c.execute("BEGIN IMMEDIATE")
            try:
                results = _run_ops(c, ops)
                c.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(sqlite3.Error):
                    c.execute("ROLLBACK")
                raise
            return results

    def write(self, op: Op) -> Any:
        return self.apply([op])[0]

    # ------------------------------------------------------------------ reads

    def query(self, sql: str, args: Iterable = ()) -> list[sqlite3.Row]:
        with self._rlock:
            return self._r.execute(sql, tuple(args)).fetchall()

    def meta(self, key: str, default: str | None = None) -> str | None:
        rows = self.query("SELECT value FROM meta WHERE key=?", (key,))
        return rows[0]["value"] if rows else default

    def open_fragments(self, uid: str | None = None) -> dict[str, list[dict]]:
        """The fragments held by open messages (all, or ``uid``'s), in
        :meth:`Held.to_dict` form, by message uid."""
        sql = ("SELECT message_uid, idx, arrived, uplink FROM fragments WHERE status='accepted' AND message_uid "
               + ("= ?" if uid else "IN (SELECT uid FROM open_messages)") + " ORDER BY id")
        out: dict[str, list[dict]] = {}
        for r in self.query(sql, (uid,) if uid else ()):
            out.setdefault(r["message_uid"], []).append(
                {"index": r["idx"], "arrived": r["arrived"], "uplink": json.loads(r["uplink"])})
        return out

    def restore_state(self, now: float, duplicate_window: float) -> tuple[list[dict], int]:
        """Open messages and those closed within ``duplicate_window`` (as
        :meth:`Message.to_dict` gives them, for the reassembler's ``load``), and the
        next message sequence number."""
        frags = self.open_fragments()
        msgs = []
        for r in self.query("SELECT state FROM open_messages"):
            h = json.loads(r["state"])
            h.pop("received", None)
            if h.get("closed") is not None:
                h["pending_close"] = True  # closed by the ingest path, not assembled yet
            h["fragments"] = sorted(frags.get(h["uid"], []), key=lambda f: f["index"])
            msgs.append(h)
        for r in self.query("SELECT message, outcome FROM messages WHERE closed >= ? AND message IS NOT NULL",
                            (now - duplicate_window,)):
            m = json.loads(r["message"])
            m["fragments"] = json.loads(r["outcome"]).get("fragments", [])
            msgs.append(m)
        return msgs, int(self.meta("next_seq", "1") or 1)

    # messages ----------------------------------------------------------

    def list_messages(self, device: str | None = None, state: str | None = None, limit: int = 100,
                      offset: int = 0) -> list[dict]:
        out: list[dict] = []
        dev = device.upper() if device else None
        if state in (None, "open"):
            sql = "SELECT uid, dev_eui, msg_id, opened, deadline, count, received FROM open_messages"
            args: list = []
            if dev:
                sql += " WHERE dev_eui=?"
                args.append(dev)
            sql += " ORDER BY opened DESC LIMIT ? OFFSET ?"
            for r in self.query(sql, [*args, limit, offset]):
                out.append({"id": r["uid"], "devEui": r["dev_eui"], "msgId": r["msg_id"], "state": "open",
                            "fragmentsExpected": r["count"], "fragmentsReceived": r["received"],
                            "delivery": None, "opened": iso(r["opened"]), "closed": None,
                            "deadline": iso(r["deadline"]), "closeReason": None})
        if state != "open":
            sql = ("SELECT uid, dev_eui, msg_id, opened, closed, state, close_reason, fragments_expected, "
                   "fragments_received, delivery FROM messages")
            conds, args = [], []
            if dev:
                conds.append("dev_eui=?")
                args.append(dev)
            if state:
                conds.append("state=?")
                args.append(state)
            if conds:
                sql += " WHERE " + " AND ".join(conds)
            sql += " ORDER BY closed DESC LIMIT ? OFFSET ?"
            for r in self.query(sql, [*args, max(0, limit - len(out)), offset]):
                out.append({"id": r["uid"], "devEui": r["dev_eui"], "msgId": r["msg_id"], "state": r["state"],
                            "fragmentsExpected": r["fragments_expected"],
                            "fragmentsReceived": r["fragments_received"], "delivery": r["delivery"],
                            "opened": iso(r["opened"]), "closed": iso(r["closed"]), "deadline": None,
                            "closeReason": r["close_reason"]})
        return out

    def get_message(self, uid: str) -> dict | None:
        """One message with the fragments that arrived (and, closed, its outcome and delivery)."""
        rows = self.query("SELECT * FROM open_messages WHERE uid=?", (uid,))
        if rows:
            r = rows[0]
            st = json.loads(r["state"])
            st["fragments"] = sorted(self.open_fragments(uid).get(uid, []), key=lambda f: f["index"])
            return {"id": uid, "devEui": r["dev_eui"], "msgId": r["msg_id"], "state": "open",
                    "fragmentsExpected": r["count"], "fragmentsReceived": r["received"], "delivery": None,
                    "opened": iso(r["opened"]), "closed": None, "deadline": iso(r["deadline"]),
                    "closeReason": None, "fragments": [_fragment_view(f) for f in st["fragments"]],
                    "missingFragments": _missing(st)}
        rows = self.query("SELECT * FROM messages WHERE uid=?", (uid,))
        if not rows:
            return None
        r = rows[0]
        out = json.loads(r["outcome"])
        d = {"id": uid, "devEui": r["dev_eui"], "msgId": r["msg_id"], "state": r["state"],
             "fragmentsExpected": r["fragments_expected"], "fragmentsReceived": r["fragments_received"],
             "delivery": r["delivery"], "opened": iso(r["opened"]), "closed": iso(r["closed"]),
             "deadline": None, "closeReason": r["close_reason"],
             "fragments": [_fragment_view(f) for f in out.get("fragments", [])],
             "missingFragments": out.get("missingFragments", []), "missingBlocks": out.get("missingBlocks", []),
             "idempotencyKey": out.get("idempotencyKey"), "complete": out.get("complete")}
        if r["state"] == "incident":
            d["incident"] = {"code": out.get("code"), "detail": out.get("detail")}
        doc = self.get_document(uid, with_xml=False)
        if doc:
            d["document"] = doc
        return d

    # documents / dead letters ------------------------------------------

    def get_document(self, uid: str, with_xml: bool = True) -> dict | None:
        rows = self.query("SELECT * FROM documents WHERE uid=?", (uid,))
        if not rows:
            return None
        d = _document_view(rows[0], with_xml)
        d["attemptLog"] = [
            {"at": iso(a["at"]), "status": a["status"], "error": a["error"], "result": a["result"],
             "durationMs": None if a["duration"] is None else round(a["duration"] * 1000, 1)}
            for a in self.query("SELECT * FROM attempts WHERE uid=? ORDER BY id", (uid,))
        ]
        return d

    def list_documents(self, state: str | None = None, limit: int = 100) -> list[dict]:
        sql = "SELECT * FROM documents"
        args: list = []
        if state:
            sql += " WHERE state=?"
            args.append(state)
        sql += " ORDER BY created DESC LIMIT ?"
        return [_document_view(r, False) for r in self.query(sql, [*args, limit])]

    def due_documents(self, now: float, limit: int, exclude: Iterable[str] = ()) -> list[sqlite3.Row]:
        ex = set(exclude)
        rows = self.query("SELECT uid, dev_eui, idempotency_key, xml, created, attempts FROM documents "
                          "WHERE state='pending' AND next_attempt <= ? ORDER BY next_attempt LIMIT ?",
                          (now, limit + len(ex)))
        return [r for r in rows if r["uid"] not in ex][:limit]

    def next_due(self, exclude: Iterable[str] = ()) -> float | None:
        """Earliest next attempt of a pending document not in ``exclude``."""
        ex = set(exclude)
        rows = self.query("SELECT uid, next_attempt FROM documents WHERE state='pending' "
                          "ORDER BY next_attempt LIMIT ?", (len(ex) + 1,))
        for r in rows:
            if r["uid"] not in ex:
                return r["next_attempt"]
        return None

    # incidents ------------------------------------------------------------

    def list_incidents(self, device: str | None = None, limit: int = 100) -> list[dict]:
        sql = "SELECT id, uid, dev_eui, msg_id, created, code, detail FROM incidents"
        args: list = []
        if device:
            sql += " WHERE dev_eui=?"
            args.append(device.upper())
        sql += " ORDER BY id DESC LIMIT ?"
        return [{"id": r["id"], "messageId": r["uid"], "devEui": r["dev_eui"], "msgId": r["msg_id"],
                 "created": iso(r["created"]), "code": r["code"], "detail": r["detail"]}
                for r in self.query(sql, [*args, limit])]

    def get_incident(self, ident: str) -> dict | None:
        # ASCII digits that fit SQLite's integer ("²" is a digit to str.isdigit, int() refuses it)
        if ident.isascii() and ident.isdigit() and len(ident) <= 18:
            rows = self.query("SELECT * FROM incidents WHERE id=?", (int(ident),))
        else:
            rows = self.query("SELECT * FROM incidents WHERE uid=?", (ident,))
        if not rows:
            return None
        r = rows[0]
        return {"id": r["id"], "messageId": r["uid"], "devEui": r["dev_eui"], "msgId": r["msg_id"],
                "created": iso(r["created"]), "code": r["code"], "detail": r["detail"],
                "outcome": json.loads(r["outcome"])}

    # devices --------------------------------------------------------------

    def device_token(self, dev_eui: str) -> str | None:
        rows = self.query("SELECT token FROM devices WHERE dev_eui=?", (dev_eui.upper(),))
        return rows[0]["token"] if rows and rows[0]["token"] else None

    def list_devices(self) -> list[dict]:
        return [{"devEui": r["dev_eui"], "name": r["name"], "hasToken": bool(r["token"]), "updated": iso(r["updated"])}
                for r in self.query("SELECT * FROM devices ORDER BY dev_eui")]

    # status ---------------------------------------------------------------

    def counts(self) -> dict:
        def one(sql: str, args: Iterable = ()) -> int:
            return int(self.query(sql, args)[0][0] or 0)
        by_state = {r["state"]: r["n"] for r in self.query("SELECT state, COUNT(*) AS n FROM messages GROUP BY state")}
        docs = {r["state"]: r["n"] for r in self.query("SELECT state, COUNT(*) AS n FROM documents GROUP BY state")}
        return {
            "openMessages": one("SELECT COUNT(*) FROM open_messages"),
            "messages": {s: by_state.get(s, 0) for s in ("complete", "partial", "incident")},
            "documents": {s: docs.get(s, 0) for s in ("pending", "delivered", "dead")},
            "incidents": one("SELECT COUNT(*) FROM incidents"),
            "fragments": one("SELECT COUNT(*) FROM fragments"),
            "devices": one("SELECT COUNT(*) FROM devices"),
        }


def _fragment_view(f: dict) -> dict:
    up = f.get("uplink", {})
    return {"index": f.get("index"), "arrived": iso(f.get("arrived")),
            "receivedAt": format_ms(up["received_ms"]) if up.get("received_ms") is not None else None,
            "fCnt": up.get("fcnt"), "dataRate": up.get("data_rate"), "gateway": up.get("gateway"),
            "rssi": up.get("rssi"), "snr": up.get("snr"), "source": up.get("source"),
            "payload": up.get("payload")}


def _missing(st: dict) -> list[int]:
    held = {f["index"] for f in st["fragments"]}
    top = st["count"] if st["count"] is not None else (max(held) + 1 if held else 0)
    return [i for i in range(top) if i not in held]


def _document_view(r: sqlite3.Row, with_xml: bool) -> dict:
    d = {"id": r["uid"], "devEui": r["dev_eui"], "idempotencyKey": r["idempotency_key"], "state": r["state"],
         "created": iso(r["created"]), "attempts": r["attempts"],
         "nextAttempt": iso(r["next_attempt"]) if r["state"] == "pending" else None,
         "deliveredAt": iso(r["delivered_at"]), "deadAt": iso(r["dead_at"]), "deadReason": r["dead_reason"],
         "lastStatus": r["last_status"], "lastError": r["last_error"], "lastResponse": r["last_response"]}
    if with_xml:
        d["xml"] = r["xml"].decode("utf-8") if r["xml"] is not None else None
    return d


# --------------------------------------------------------------------------- group commit


def together(ops: list[Op]) -> Op:
    """One op that runs ``ops`` (so they commit or fail as one); returns their results."""
    def run(c: sqlite3.Connection) -> list[Any]:
        return [op(c) for op in ops]
    return run


class GroupCommitter:
    """Batches concurrent writes into one transaction on a dedicated thread.

    ``await submit(op)`` returns the op's result once the transaction holding it
    has committed, or raises :class:`StoreUnavailable`.
    """

    def __init__(self, store: Store, max_batch: int = 1000, max_pending: int = 20_000,
                 on_commit: Callable[[int, float], None] | None = None):
        self.store = store
        self.max_batch = max_batch
        self.max_pending = max_pending
        self.on_commit = on_commit
        self._queue: asyncio.Queue[tuple[Op, asyncio.Future]] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="collector-store")
        self._task: asyncio.Task | None = None
        self._closing = False
        self.failed_batches = 0

    @property
    def depth(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="group-commit")

    def submit_nowait(self, op: Op) -> asyncio.Future:
        if self._closing:
            raise StoreUnavailable("the store is shutting down")
        if self._queue.qsize() >= self.max_pending:
            raise StoreUnavailable(f"{self._queue.qsize()} writes already waiting for the store")
        fut = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((op, fut))
        return fut

    async def submit(self, op: Op) -> Any:
        return await self.submit_nowait(op)

    async def submit_many(self, ops: list[Op]) -> list[Any]:
        """Commit ``ops`` together (in one transaction)."""
        return await self.submit(together(ops))

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            first = await self._queue.get()
            batch = [first]
            while len(batch) < self.max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except asyncio.QueueEmpty:
                    break
            if any(op is None for op, _ in batch):
                stop = True
                batch = [b for b in batch if b[0] is not None]
                if not batch:
                    break
            ops = [op for op, _ in batch]
            t0 = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self.store.apply, ops)
            except Exception as e:  # noqa: BLE001 - any store failure becomes 503, per request
                self.failed_batches += 1
                log.error("event=commit_failed ops=%d error=%r", len(ops), str(e))
                if len(batch) > 1:
                    # one bad op must not fail its neighbours: retry them one by one
                    for op, fut in batch:
                        try:
                            res = await loop.run_in_executor(self._executor, self.store.write, op)
                        except Exception as e1:  # noqa: BLE001
                            if not fut.done():
                                fut.set_exception(StoreUnavailable(f"the store could not commit: {e1}"))
                        else:
                            if not fut.done():
                                fut.set_result(res)
                else:
                    _op, fut = batch[0]
                    if not fut.done():
                        fut.set_exception(StoreUnavailable(f"the store could not commit: {e}"))
                continue
            if self.on_commit:
                self.on_commit(len(batch), loop.time() - t0)
            for (_, fut), res in zip(batch, results, strict=True):
                if not fut.done():
                    fut.set_result(res)

    async def close(self) -> None:
        """Commit everything already queued, then stop."""
        self._closing = True
        if self._task is not None and not self._task.done():
            self._queue.put_nowait((None, None))  # type: ignore[arg-type]
            await self._task
        self._executor.shutdown(wait=True)
