"""A stand-in for the Web App: the upload contract of ``xml-format.md`` §2, with
faults on demand. The scenarios and the tests deliver to it.

- ``POST {upload_path}``: ``Authorization: Token <t>`` (401 unless ``t`` is configured
  or was issued by the login route), ``Idempotency-Key`` required (400), an XML body
  valid against the shipped XSD (400 with the errors), a key seen before answers 409;
  else the document is stored (SQLite) and answered 201.
- ``POST {login_path}`` ``{"username", "password"}`` → ``{"token": ...}``.
- Faults (set at start or by ``POST /stub/faults``): ``error_rate`` (fraction answered
  ``error_status``, drawn from a seeded stream), ``rate_limit_rate`` (fraction answered
  429 with ``Retry-After: retry_after``), ``latency`` (seconds added to each upload),
  ``outage`` (every upload answered 503 while true), ``outages`` (windows
  ``[start, end)`` in seconds since the stub started), ``fail_next`` /
  ``throttle_next`` (the next N uploads answered ``error_status`` / 429),
  ``reject_status`` (every upload answered with this status, e.g. 403).
- Inspection: ``GET /stub/documents`` (what was stored), ``GET /stub/requests``
  (every upload and its answer), ``GET /stub/stats``, ``POST /stub/expire-tokens``
  (login tokens stop working, to exercise a refresh).
"""

from __future__ import annotations

import asyncio
import dataclasses
import hmac
import json
import logging
import random
import secrets
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from collector.core.xmldoc import xsd_validate
from collector.service.store import create_private_file

log = logging.getLogger("collector.webapp_stub")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY, idempotency_key TEXT UNIQUE NOT NULL, token TEXT, received REAL NOT NULL, xml BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, idempotency_key TEXT, status INTEGER NOT NULL, reason TEXT);
"""


@dataclass
class Faults:
    error_rate: float = 0.0
    error_status: int = 500
    rate_limit_rate: float = 0.0
    retry_after: float = 1.0
    latency: float = 0.0
    outage: bool = False
    outages: list[list[float]] = field(default_factory=list)
    fail_next: int = 0
    throttle_next: int = 0
    reject_status: int | None = None

    def update(self, d: dict) -> None:
        names = {f.name: f for f in dataclasses.fields(self)}
        for k, v in d.items():
            if k not in names:
                raise ValueError(f"unknown fault {k!r}; known: {', '.join(names)}")
            if k == "outages":
                if not isinstance(v, list) or not all(
                        isinstance(w, list) and len(w) == 2 and all(isinstance(x, int | float) for x in w) for w in v):
                    raise ValueError("outages must be a list of [start, end] seconds")
            elif k == "outage":
                if not isinstance(v, bool):
                    raise ValueError("outage must be true or false")
            elif k == "reject_status":
                if v is not None and (not isinstance(v, int) or not 100 <= v <= 599):
                    raise ValueError("reject_status must be an HTTP status or null")
            elif not isinstance(v, int | float) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{k} must be a non-negative number")
            setattr(self, k, v)


@dataclass
class StubConfig:
    host: str = "127.0.0.1"
    port: int = 8090
    db: str = ":memory:"
    tokens: list[str] = field(default_factory=list)
    #: username → password for the login route
    users: dict[str, str] = field(default_factory=dict)
    upload_path: str = "/api/measurements/upload/"
    login_path: str = "/api/auth/login/"
    seed: int = 0
    faults: Faults = field(default_factory=Faults)


class WebAppStub:
    def __init__(self, cfg: StubConfig):
        self.cfg = cfg
        self.faults = cfg.faults
        self.rng = random.Random(cfg.seed)
        if cfg.db != ":memory:":
            create_private_file(cfg.db)
        self.db = sqlite3.connect(cfg.db, isolation_level=None, check_same_thread=False)
        self.db.row_factory = sqlite3.Row
        if cfg.db != ":memory:":
            self.db.execute("PRAGMA journal_mode = WAL")
        self.db.executescript(_SCHEMA)
        self.issued: set[str] = set()
        self.started = time.monotonic()

    # ------------------------------------------------------------------ helpers

    def _token_ok(self, header: str | None) -> str | None:
        if not header or not header.startswith("Token "):
            return None
        tok = header[6:].strip()
        ok = False
        for t in [*self.cfg.tokens, *self.issued]:
            ok |= hmac.compare_digest(tok.encode(), t.encode())
        return tok if ok else None

    def _record(self, key: str | None, status: int, reason: str) -> None:
        self.db.execute("INSERT INTO requests(at, idempotency_key, status, reason) VALUES (?,?,?,?)",
                        (time.time(), key, status, reason[:500]))

    def _in_outage(self) -> bool:
        if self.faults.outage:
            return True
        t = time.monotonic() - self.started
        return any(a <= t < b for a, b in self.faults.outages)

    @staticmethod
    def _json(status: int, body: dict, headers: dict | None = None) -> web.Response:
        return web.json_response(body, status=status, headers=headers)

    # ------------------------------------------------------------------ routes

    async def upload(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        f = self.faults
        if f.latency:
            await asyncio.sleep(f.latency)
        if self._in_outage():
            self._record(key, 503, "outage")
            return self._json(503, {"error": "service unavailable (outage)"}, {"Retry-After": "5"})
        if f.reject_status is not None:
            self._record(key, f.reject_status, "reject_status")
            return self._json(f.reject_status, {"error": f"rejected with {f.reject_status} on request"})
        if f.throttle_next > 0 or (f.rate_limit_rate and self.rng.random() < f.rate_limit_rate):
            f.throttle_next = max(0, f.throttle_next - 1)
            self._record(key, 429, "rate limited")
            return self._json(429, {"error": "too many requests"}, {"Retry-After": f"{f.retry_after:g}"})
        if f.fail_next > 0 or (f.error_rate and self.rng.random() < f.error_rate):
            f.fail_next = max(0, f.fail_next - 1)
            self._record(key, f.error_status, "injected error")
            return self._json(f.error_status, {"error": "injected failure"})
        token = self._token_ok(request.headers.get("Authorization"))
        if token is None:
            self._record(key, 401, "bad token")
            return self._json(401, {"error": "missing or invalid token"})
        if not key:
            self._record(key, 400, "no Idempotency-Key")
            return self._json(400, {"error": "the Idempotency-Key header is required"})
        ctype = request.headers.get("Content-Type", "")
        if not ctype.startswith("application/xml"):
            self._record(key, 415, f"content type {ctype}")
            return self._json(415, {"error": f"expected application/xml, got {ctype or 'nothing'}"})
        body = await request.read()
        errors = xsd_validate(body)
        if errors:
            self._record(key, 400, "invalid: " + errors[0])
            return self._json(400, {"error": "the document does not validate", "details": errors[:20]})
        try:
            cur = self.db.execute("INSERT INTO documents(idempotency_key, token, received, xml) VALUES (?,?,?,?)",
                                  (key, token, time.time(), body))
        except sqlite3.IntegrityError:
            self._record(key, 409, "duplicate key")
            return self._json(409, {"error": "a document with this Idempotency-Key exists"})
        self._record(key, 201, "stored")
        return self._json(201, {"id": cur.lastrowid})

    async def login(self, request: web.Request) -> web.Response:
        try:
            d = await request.json()
            user, pw = d["username"], d["password"]
        except (ValueError, KeyError, TypeError):
            return self._json(400, {"error": "username and password are required"})
        want = self.cfg.users.get(user) if isinstance(user, str) else None
        if want is None or not isinstance(pw, str) or not hmac.compare_digest(pw.encode(), want.encode()):
            return self._json(401, {"error": "bad credentials"})
        tok = secrets.token_hex(16)
        self.issued.add(tok)
        return self._json(200, {"token": tok})

    async def get_documents(self, request: web.Request) -> web.Response:
        rows = self.db.execute("SELECT id, idempotency_key, token, received, xml FROM documents ORDER BY id").fetchall()
        return self._json(200, {"documents": [
            {"id": r["id"], "idempotencyKey": r["idempotency_key"], "token": r["token"], "received": r["received"],
             "xml": r["xml"].decode("utf-8")} for r in rows]})

    async def get_requests(self, request: web.Request) -> web.Response:
        rows = self.db.execute("SELECT * FROM requests ORDER BY id").fetchall()
        return self._json(200, {"requests": [dict(r) for r in rows]})

    def stats(self) -> dict[str, Any]:
        by_status = {str(r[0]): r[1] for r in self.db.execute(
            "SELECT status, COUNT(*) FROM requests GROUP BY status")}
        n = self.db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        return {"documents": n, "requests": by_status, "faults": dataclasses.asdict(self.faults)}

    async def get_stats(self, request: web.Request) -> web.Response:
        return self._json(200, self.stats())

    async def set_faults(self, request: web.Request) -> web.Response:
        try:
            d = await request.json()
            if not isinstance(d, dict):
                raise ValueError("expected a JSON object")
            self.faults.update(d)
        except ValueError as e:
            return self._json(400, {"error": str(e)})
        log.info("event=faults %s", json.dumps(dataclasses.asdict(self.faults)))
        return self._json(200, {"faults": dataclasses.asdict(self.faults)})

    async def expire_tokens(self, request: web.Request) -> web.Response:
        n = len(self.issued)
        self.issued.clear()
        return self._json(200, {"expired": n})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post(self.cfg.upload_path, self.upload)
        app.router.add_post(self.cfg.login_path, self.login)
        app.router.add_get("/stub/documents", self.get_documents)
        app.router.add_get("/stub/requests", self.get_requests)
        app.router.add_get("/stub/stats", self.get_stats)
        app.router.add_post("/stub/faults", self.set_faults)
        app.router.add_post("/stub/expire-tokens", self.expire_tokens)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        self.db.close()


async def start_stub(cfg: StubConfig) -> tuple[WebAppStub, web.AppRunner, int]:
    """Start the stub on ``cfg.host:cfg.port`` (0: a free port); returns (stub, runner, port)."""
    stub = WebAppStub(cfg)
    runner = web.AppRunner(stub.app(), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, cfg.host, cfg.port).start()
    port = runner.addresses[0][1]
    return stub, runner, port
