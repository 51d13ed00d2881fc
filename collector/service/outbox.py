"""The durable downlink outbox and the devices' repair state (wire format v2).

Three tables beside the store's own (created by :func:`create_schema`, which the
store's schema creation calls):

- ``repair_devices``: per device, the repair state of
  :class:`collector.core.repair.DeviceRepair` (JSON) and the downlink route the
  device's latest uplink came with (network server, push URLs, API key). The key
  is a secret: it is stored here and used to push, never logged nor shown by the
  API (:func:`public_route`).
- ``downlinks``: per device at most one downlink, ``pending`` (committed, not yet
  taken by the network server) or ``sent`` (taken; the device's next uplink opens
  the receive windows it goes out in). A newer one replaces it, carrying every
  command still due. It is written in the same transaction as the uplink that
  made it due, so a 202 promises the downlink too; a pending one is retried with
  backoff until the network server takes it, also after a restart.
- ``downlink_log``: each attempt's outcome, for ``/api/messages/{id}`` and
  ``collector status`` (pruned with the fragments).

The operations are closures over plain data run by the store's writer thread in
its transaction, like the store's own ``op_*`` functions.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import Any

import orjson

from collector.core.timefmt import format_ms

Op = Callable[[sqlite3.Connection], Any]

SCHEMA = """
CREATE TABLE IF NOT EXISTS repair_devices (
    dev_eui TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    route TEXT,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS downlinks (
    dev_eui TEXT PRIMARY KEY,
    payload BLOB NOT NULL,
    commands TEXT NOT NULL,
    state TEXT NOT NULL,
    replaces INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt REAL NOT NULL,
    sent_at REAL,
    last_error TEXT
);
CREATE INDEX IF NOT EXISTS downlinks_due ON downlinks(state, next_attempt);
CREATE TABLE IF NOT EXISTS downlink_log (
    id INTEGER PRIMARY KEY,
    dev_eui TEXT NOT NULL,
    at REAL NOT NULL,
    payload TEXT NOT NULL,
    commands TEXT NOT NULL,
    outcome TEXT NOT NULL,
    detail TEXT
);
CREATE INDEX IF NOT EXISTS downlink_log_device ON downlink_log(dev_eui, at);
"""

#: route fields that are secrets (never logged, never shown)
SECRET_FIELDS = ("key",)


def create_schema(conn: sqlite3.Connection) -> None:
    conn.executescript(SCHEMA)


def public_route(route: dict | None) -> dict | None:
    """The route as the API and the logs may show it: without its secrets."""
    if route is None:
        return None
    return {k: ("***" if k in SECRET_FIELDS and v else v) for k, v in route.items()}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


# --------------------------------------------------------------------------- writes


def op_repair(dev_eui: str, state: dict, route: dict | None, downlink: tuple[bytes, list[str]] | None,
              now: float) -> Op:
    """Record a device's repair state (and its route, when the uplink brought one);
    with ``downlink`` (payload, commands) make it the device's one pending downlink,
    replacing the one before."""
    state_text = _dumps(state)
    route_text = _dumps(route) if route is not None else None

    def run(c: sqlite3.Connection) -> None:
        c.execute("INSERT INTO repair_devices(dev_eui, state, route, updated) VALUES (?,?,?,?) "
                  "ON CONFLICT(dev_eui) DO UPDATE SET state=excluded.state, "
                  "route=COALESCE(excluded.route, repair_devices.route), updated=excluded.updated",
                  (dev_eui, state_text, route_text, now))
        if downlink is None:
            return
        payload, commands = downlink
        old = c.execute("SELECT state, payload FROM downlinks WHERE dev_eui=?", (dev_eui,)).fetchone()
        if old is not None and old[0] == "pending" and bytes(old[1]) == payload:
            return  # the same downlink is already waiting: keep its retry schedule
        # a downlink the network server took but the device has not had yet is replaced
        replaces = int(old is not None and old[0] == "sent")
        c.execute("INSERT INTO downlinks(dev_eui, payload, commands, state, replaces, created, attempts, "
                  "next_attempt) VALUES (?,?,?,'pending',?,?,0,?) ON CONFLICT(dev_eui) DO UPDATE SET "
                  "payload=excluded.payload, commands=excluded.commands, state='pending', "
                  "replaces=MAX(downlinks.replaces, excluded.replaces), created=excluded.created, "
                  "attempts=0, next_attempt=excluded.next_attempt, sent_at=NULL, last_error=NULL",
                  (dev_eui, payload, _dumps(commands), replaces, now, now))
    return run


def op_delivered(dev_eui: str, state: dict, now: float) -> Op:
    """The device sent an uplink after its downlink was taken: the sent row is done."""
    state_text = _dumps(state)

    def run(c: sqlite3.Connection) -> None:
        c.execute("UPDATE repair_devices SET state=?, updated=? WHERE dev_eui=?", (state_text, now, dev_eui))
        c.execute("DELETE FROM downlinks WHERE dev_eui=? AND state='sent'", (dev_eui,))
    return run


def op_attempt(dev_eui: str, payload: bytes, commands: list[str], outcome: str, detail: str | None, now: float,
               next_attempt: float | None, state: dict | None) -> Op:
    """The outcome of handing ``payload`` to the network server: ``sent`` (taken; the
    device's ``state`` with the hand-over recorded), otherwise retried at
    ``next_attempt``. A row that a newer downlink replaced meanwhile is left alone.
    Returns whether the row was still this downlink."""
    log_row = (dev_eui, now, payload.hex(), _dumps(commands), outcome, detail)
    state_text = _dumps(state) if state is not None else None

    def run(c: sqlite3.Connection) -> bool:
        c.execute("INSERT INTO downlink_log(dev_eui, at, payload, commands, outcome, detail) VALUES (?,?,?,?,?,?)",
                  log_row)
        if outcome == "sent":
            n = c.execute("UPDATE downlinks SET state='sent', replaces=0, sent_at=?, attempts=attempts+1, "
                          "last_error=NULL WHERE dev_eui=? AND state='pending' AND payload=?",
                          (now, dev_eui, payload)).rowcount
            if n and state_text is not None:
                c.execute("UPDATE repair_devices SET state=?, updated=? WHERE dev_eui=?", (state_text, now, dev_eui))
        elif next_attempt is None:  # given up (expired)
            n = c.execute("DELETE FROM downlinks WHERE dev_eui=? AND state='pending' AND payload=?",
                          (dev_eui, payload)).rowcount
        else:
            n = c.execute("UPDATE downlinks SET attempts=attempts+1, next_attempt=?, last_error=? "
                          "WHERE dev_eui=? AND state='pending' AND payload=?",
                          (next_attempt, detail, dev_eui, payload)).rowcount
        return bool(n)
    return run


def op_prune_log(before: float) -> Op:
    def run(c: sqlite3.Connection) -> int:
        return c.execute("DELETE FROM downlink_log WHERE at < ?", (before,)).rowcount
    return run


# --------------------------------------------------------------------------- reads
# ``q(sql, args)`` runs a query and returns its rows (``Store.query``, or a
# connection's ``execute(...).fetchall``)

Query = Callable[[str, tuple], list]


def _one(rows: list) -> Any:
    return rows[0] if rows else None


def load(q: Query) -> list[tuple[str, dict, dict | None]]:
    """Every device's repair state and route, to restore at start."""
    return [(r[0], json.loads(r[1]), json.loads(r[2]) if r[2] else None)
            for r in q("SELECT dev_eui, state, route FROM repair_devices", ())]


def due(q: Query, now: float, limit: int = 100) -> list[dict]:
    rows = q("SELECT dev_eui, payload, commands, replaces, attempts, created FROM downlinks "
             "WHERE state='pending' AND next_attempt <= ? ORDER BY next_attempt LIMIT ?", (now, limit))
    return [{"dev_eui": r[0], "payload": bytes(r[1]), "commands": json.loads(r[2]), "replaces": bool(r[3]),
             "attempts": r[4], "created": r[5]} for r in rows]


def next_due(q: Query) -> float | None:
    row = _one(q("SELECT MIN(next_attempt) FROM downlinks WHERE state='pending'", ()))
    return row[0] if row else None


def downlink_states(q: Query) -> dict[str, str]:
    return {r[0]: r[1] for r in q("SELECT dev_eui, state FROM downlinks", ())}


def device_view(q: Query, dev_eui: str, since: float | None = None, limit: int = 50) -> dict | None:
    """What the API shows of a device's repair: route (no secrets), state, the
    pending downlink and the attempts since ``since``."""
    row = _one(q("SELECT state, route, updated FROM repair_devices WHERE dev_eui=?", (dev_eui,)))
    if row is None:
        return None
    dl = _one(q("SELECT payload, commands, state, attempts, next_attempt, sent_at, last_error FROM downlinks "
                "WHERE dev_eui=?", (dev_eui,)))
    log_rows = q("SELECT at, payload, commands, outcome, detail FROM downlink_log WHERE dev_eui=? AND at >= ? "
                 "ORDER BY id DESC LIMIT ?", (dev_eui, since if since is not None else 0.0, limit))
    return {
        "state": json.loads(row[0]),
        "route": public_route(json.loads(row[1]) if row[1] else None),
        "pending": None if dl is None else {
            "payload": bytes(dl[0]).hex(), "commands": json.loads(dl[1]), "state": dl[2], "attempts": dl[3],
            "nextAttempt": iso(dl[4]) if dl[2] == "pending" else None, "sentAt": iso(dl[5]),
            "lastError": dl[6]},
        "downlinks": [{"at": iso(r[0]), "payload": r[1], "commands": json.loads(r[2]), "outcome": r[3],
                       "detail": r[4]} for r in reversed(log_rows)],
    }


def counts(q: Query) -> dict:
    by_state = {r[0]: r[1] for r in q("SELECT state, COUNT(*) FROM downlinks GROUP BY state", ())}
    outcomes = {r[0]: r[1] for r in q("SELECT outcome, COUNT(*) FROM downlink_log GROUP BY outcome", ())}
    no_route = q("SELECT COUNT(*) FROM repair_devices WHERE route IS NULL", ())[0][0]
    devices = q("SELECT COUNT(*) FROM repair_devices", ())[0][0]
    return {"devices": devices, "withoutRoute": no_route,
            "pending": by_state.get("pending", 0), "sent": by_state.get("sent", 0), "outcomes": outcomes}


def iso(t: float | None) -> str | None:
    return None if t is None else format_ms(int(round(t * 1000)))
