"""The database file: its schema and how a connection to it is opened.

One SQLite database file in WAL mode, ``synchronous=FULL``. It holds the fragments
that arrived, open-message state, closed messages, documents awaiting delivery,
delivery attempts, incidents and the device registry.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from collector.service import outbox

SCHEMA_VERSION = 1

SCHEMA = """
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
        conn.executescript(SCHEMA)
        outbox.create_schema(conn)
        conn.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    conn.execute("PRAGMA foreign_keys = ON")
    return conn
