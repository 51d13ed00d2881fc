"""Noticing a damaged database instead of acknowledging into it.

At start :func:`open_store` opens the database and runs ``PRAGMA quick_check``: a file
that is not a database, a damaged one, one that cannot be written (read-only file or
directory) or cannot be created stops the start with one line that says which and
what to do, instead of a traceback.

While the service runs, :class:`FileWatch` watches the identity (device and inode)
and the size of the database file and of its write-ahead log. SQLite keeps writing to
the files it opened: if either is deleted, replaced or truncated under it (an
operator's ``rm``, a restore over the running service, a full disk handled by
``truncate``), every later commit goes where the next start will not find it - the
acknowledged data would be lost while ``/healthz`` says ok. Once the watch sees it,
``/healthz`` answers 503 with the problem, ingest answers 503 (nothing more is
acknowledged), and it is logged as an error, once.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import time
from pathlib import Path

from aiohttp import web

from collector.service.store import Store

log = logging.getLogger("collector.integrity")

#: seconds between checks of the files by the watch task; ingest re-checks a result older than RECHECK
INTERVAL = 1.0
RECHECK = 0.25


class DatabaseUnusable(RuntimeError):
    """The database cannot be used; the message is one line for the operator."""


def open_store(path: str, check: bool = True) -> Store:
    """The store at ``path``, checked (:func:`quick_check`, unless ``check`` is false);
    :class:`DatabaseUnusable` otherwise."""
    try:
        store = Store(path)
    except sqlite3.DatabaseError as e:
        raise DatabaseUnusable(_why(path, e)) from None
    except OSError as e:
        raise DatabaseUnusable(f"cannot create database {path!r}: {e.strerror or e}") from None
    if not check:
        return store
    try:
        problem = quick_check(store)
    except sqlite3.DatabaseError as e:
        store.close()
        raise DatabaseUnusable(_why(path, e)) from None
    if problem:
        store.close()
        raise DatabaseUnusable(f"database {path!r} is damaged ({problem}); restore it from a backup or move it "
                               "away to start with an empty one")
    return store


def quick_check(store: Store) -> str | None:
    """``PRAGMA quick_check``'s first complaint, or None when the database is sound."""
    rows = store.query("PRAGMA quick_check")
    first = str(rows[0][0]) if rows else "no answer"
    return None if first == "ok" else first.splitlines()[0][:200]


def _why(path: str, e: sqlite3.DatabaseError) -> str:
    text = str(e)
    if "readonly" in text or "read-only" in text:
        return f"database {path!r} cannot be written ({text}): check the permissions of the file and its directory"
    if "not a database" in text or "malformed" in text or "corrupt" in text:
        return (f"database {path!r} is damaged or not a database ({text}); restore it from a backup or move it "
                "away to start with an empty one")
    return f"cannot open database {path!r}: {text}"


class FileWatch:
    """The identity and size of the database file and its WAL, as first seen."""

    def __init__(self, path: str):
        self.paths = {"database file": Path(path), "write-ahead log": Path(path + "-wal")}
        self._seen: dict[str, tuple[int, int, int]] = {}
        self.problem: str | None = None
        self._checked = 0.0
        if path != ":memory:":
            self.check()

    def check(self) -> str | None:
        """Look again; the problem (kept once found), or None."""
        self._checked = time.monotonic()
        if self.problem is not None or not self._seen and not self.paths["database file"].exists():
            return self.problem
        for what, p in self.paths.items():
            try:
                st = os.stat(p)
            except FileNotFoundError:
                if what in self._seen:
                    return self._found(f"the {what} {str(p)!r} was deleted while the service runs")
                continue
            except OSError as e:
                return self._found(f"the {what} {str(p)!r} cannot be read: {e.strerror or e}")
            ident = (st.st_dev, st.st_ino, st.st_size)
            old = self._seen.get(what)
            if old is not None and old[:2] != ident[:2]:
                return self._found(f"the {what} {str(p)!r} was replaced while the service runs")
            if old is not None and ident[2] < old[2]:
                return self._found(f"the {what} {str(p)!r} was truncated from {old[2]} to {ident[2]} bytes "
                                   "while the service runs")
            self._seen[what] = ident
        return None

    def current(self) -> str | None:
        """The problem, looked at again when the last look is older than :data:`RECHECK` s."""
        if self.problem is None and time.monotonic() - self._checked > RECHECK:
            self.check()
        return self.problem

    def _found(self, problem: str) -> str:
        self.problem = (f"{problem}: what is written now would be lost at the next start; the service "
                        "refuses uplinks - stop it, and check or restore the database")
        log.error("event=database_damaged problem=%r", self.problem)
        return self.problem

    async def run(self, stopping) -> None:
        """Check every :data:`INTERVAL` seconds until ``stopping()``."""
        while not stopping() and self.problem is None:
            await asyncio.to_thread(self.check)
            await asyncio.sleep(INTERVAL)


#: the running service's watch (set while the store is open)
STORE_WATCH = web.AppKey("store_watch", FileWatch)
