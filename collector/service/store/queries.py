"""The store: synchronous access to the database, and the queries of the read API.

Writes go through :meth:`Store.apply` (one transaction for a list of
:mod:`~collector.service.store.ops`); the service reaches it through
:class:`~collector.service.store.committer.GroupCommitter`.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from typing import Any

from collector.core.timefmt import format_ms
from collector.service.store.ops import Op, run_ops
from collector.service.store.schema import connect

#: messages restored per batch at start (:meth:`Store.restore_batches`)
RESTORE_BATCH = 2000


def iso(t: float | None) -> str | None:
    """Clock seconds → RFC 3339 with milliseconds (None stays None)."""
    return None if t is None else format_ms(int(round(t * 1000)))


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
        # after the query or commit a thread may still be running on a connection
        # (its awaiting task was cancelled): closing under it crashes the interpreter
        with self._rlock, self._wlock:
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
                results = run_ops(c, ops)
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
        next message sequence number. All at once: the service restores in batches
        (:meth:`restore_batches`)."""
        return [m for b in self.restore_batches(now, duplicate_window) for m in b], self.next_seq()

    def next_seq(self) -> int:
        return int(self.meta("next_seq", "1") or 1)

    def restore_batches(self, now: float, duplicate_window: float, size: int | None = None) -> Iterator[list[dict]]:
        """What :meth:`restore_state` returns, ``size`` messages at a time: the open
        messages in opening order, then the recently closed ones. Only one batch of
        rows and decoded JSON exists at a time (all at once, a restart at the
        50,000-message cap took 516 MB against 214 MB while running)."""
        size = size or RESTORE_BATCH
        after: tuple = (float("-inf"), "")
        while True:
            rows = self.query("SELECT uid, opened, state FROM open_messages WHERE opened > ? OR (opened = ? AND uid > ?) "
                              "ORDER BY opened, uid LIMIT ?", (after[0], after[0], after[1], size))
            if not rows:
                break
            after = (rows[-1]["opened"], rows[-1]["uid"])
            frags: dict[str, list[dict]] = {}
            marks = ",".join("?" * len(rows))
            for r in self.query("SELECT message_uid, idx, arrived, uplink FROM fragments WHERE status='accepted' "
                                f"AND message_uid IN ({marks}) ORDER BY id", [r["uid"] for r in rows]):  # noqa: S608
                frags.setdefault(r["message_uid"], []).append(
                    {"index": r["idx"], "arrived": r["arrived"], "uplink": json.loads(r["uplink"])})
            batch = []
            for r in rows:
                h = json.loads(r["state"])
                h.pop("received", None)
                if h.get("closed") is not None:
                    h["pending_close"] = True  # closed by the ingest path, not assembled yet
                h["fragments"] = sorted(frags.get(h["uid"], []), key=lambda f: f["index"])
                batch.append(h)
            yield batch
        last = 0
        while True:
            rows = self.query("SELECT rowid, message, outcome FROM messages WHERE closed >= ? AND message IS NOT NULL "
                              "AND rowid > ? ORDER BY rowid LIMIT ?", (now - duplicate_window, last, size))
            if not rows:
                break
            last = rows[-1]["rowid"]
            batch = []
            for r in rows:
                m = json.loads(r["message"])
                m["fragments"] = json.loads(r["outcome"]).get("fragments", [])
                batch.append(m)
            yield batch

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
            "fCnt": up.get("fcnt"), "fPort": up.get("fport"), "dataRate": up.get("data_rate"), "gateway": up.get("gateway"),
            "rssi": up.get("rssi"), "snr": up.get("snr"), "source": up.get("source"),
            "payload": up.get("payload"), "networkServerTime": up.get("ns_time")}


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
