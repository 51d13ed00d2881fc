"""The checks every ingest request passes before its uplink reaches the reassembler.

:class:`IngestGate` authenticates the request, enforces the body limit, the content
type and the read timeout, reads the body and parses it into an
:class:`~collector.core.uplink.Uplink` (:mod:`collector.core.ingest`). What it rejects is
answered here (401, 400, 408, 413, 415, or 202 "ignored"); what it accepts goes on
to the process that owns the reassembler and the store. The same gate runs in the
single-process service and in each HTTP worker process (:mod:`collector.service.workers`),
so an answer does not depend on which process took the connection.

The uplink's receive time is left ``None`` when the body carries none: the owner
fills in its own clock's time (virtual time included), the one the deadlines use.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
from aiohttp import web

from collector.core import ingest, webhook
from collector.core.uplink import Uplink
from collector.service.config import ServiceConfig

log = logging.getLogger("collector.ingest")

INTEGRATIONS = {"ttn": "/uplink/ttn", "chirpstack": "/uplink/chirpstack", "generic": "/uplink"}


@dataclass(frozen=True, slots=True)
class Answer:
    """An HTTP answer as plain data (it crosses process boundaries)."""
    status: int
    body: dict
    headers: dict[str, str] | None = None
    #: close the connection after answering
    close: bool = False

    def response(self) -> web.Response:
        resp = web.Response(body=orjson.dumps(self.body), status=self.status, headers=self.headers,
                            content_type="application/json", charset="utf-8")
        if self.close:
            resp.force_close()
        return resp


def error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Answer:
    return Answer(status, {"error": message, **extra}, headers)


class IngestStats(Protocol):
    """Where the gate counts what it decides."""

    def uplink(self, integration: str, outcome: str) -> None: ...


def ingest_tokens(cfg: ServiceConfig) -> dict[str, list[bytes]]:
    """The tokens each integration's route accepts."""
    return {name: [t.encode() for t in [*cfg.ingest_token, *getattr(cfg, f"{name}_token")]]
            for name in INTEGRATIONS}


def _check_token(cfg: ServiceConfig, request: web.Request, tokens: list[bytes]) -> bool:
    values = [request.headers.get(cfg.auth_header)]
    if cfg.auth_header.lower() != "authorization":
        values.append(request.headers.get("Authorization"))
    ok = False
    for value in values:
        if not value:
            continue
        v = value.strip()
        if v[:7].lower() == "bearer ":
            v = v[7:].strip()
        vb = v.encode()
        for t in tokens:
            ok |= hmac.compare_digest(vb, t)
    return ok


def authorised(cfg: ServiceConfig, request: web.Request, tokens: list[bytes]) -> bool:
    if not tokens:
        return cfg.allow_anonymous
    return _check_token(cfg, request, tokens)


class IngestGate:
    def __init__(self, cfg: ServiceConfig, stats: IngestStats):
        self.cfg = cfg
        self.stats = stats
        self.tokens = ingest_tokens(cfg)

    def ignored(self, integration: str, reason: str) -> Answer:
        self.stats.uplink(integration, "ignored")
        return Answer(202, {"status": "ignored", "reason": reason})

    def bad(self, integration: str, status: int, message: str, **extra: Any) -> Answer:
        self.stats.uplink(integration, "rejected")
        log.warning("event=rejected integration=%s status=%d error=%r", integration, status, message)
        return error(status, message, **extra)

    async def admit(self, request: web.Request, integration: str) -> Uplink | Answer:
        """The request's uplink, or the answer that ends the request here."""
        cfg = self.cfg
        if not authorised(cfg, request, self.tokens[integration]):
            self.stats.uplink(integration, "unauthorised")
            log.warning("event=unauthorised integration=%s remote=%s", integration, request.remote)
            return error(401, f"missing or wrong token ({cfg.auth_header} header)")
        limit = cfg.body_limit
        if request.content_length is not None and request.content_length > limit:
            return self.bad(integration, 413, f"the body is {request.content_length} bytes; the limit is {limit}")
        ctype = request.content_type  # "application/octet-stream" when the header is absent
        if request.headers.get("Content-Type") is not None and not (
                ctype == "application/json" or ctype.endswith("+json")):
            hint = " (set the ChirpStack integration to JSON)" if integration == "chirpstack" else ""
            return self.bad(integration, 415, f"the body must be JSON (Content-Type: application/json), "
                                              f"not {ctype}{hint}")
        if integration == "chirpstack":
            event = request.query.get("event")
            if event != "up":
                return self.ignored(integration, f"ChirpStack event {event!r} is not handled" if event
                                    else "no ChirpStack event given (?event=up)")
        try:
            if request.content.is_eof():  # the whole body has arrived: reading it cannot wait
                body = await request.read()
            else:
                async with asyncio.timeout(cfg.read_timeout):
                    body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self.bad(integration, 413, f"the body exceeds the limit of {limit} bytes")
        except TimeoutError:  # a client trickling its body must not hold a handler forever
            ans = self.bad(integration, 408, f"the body did not arrive within {cfg.read_timeout:g} s")
            return Answer(ans.status, ans.body, close=True)
        try:
            return webhook.parse_body(integration, body, None, cfg.default_region)
        except ingest.Ignored as e:
            return self.ignored(integration, e.reason)
        except ingest.IngestError as e:
            return self.bad(integration, 400, str(e))
