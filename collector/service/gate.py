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
from dataclasses import dataclass, replace
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from collector.core import ingest, webhook
from collector.core.uplink import Uplink
from collector.service.config import ServiceConfig
from collector.service.errors import payload_reason

log = logging.getLogger("collector.ingest")

#: an unwanted body (after a 401, 413, ...) announced as at most this many bytes is read
#: and dropped; a larger one is not read at all: the connection is closed instead
DRAIN_MAX = 4 * 2**20
#: request Content-Encodings aiohttp decodes (anything else is answered 415)
ENCODINGS = frozenset({"", "identity", "gzip", "x-gzip", "deflate", "br"})

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


def _check_token(cfg: ServiceConfig, request: web.Request, tokens: list[bytes], header: str | None = None) -> bool:
    header = header or cfg.auth_header
    values = [request.headers.get(header)]
    if header.lower() != "authorization":
        values.append(request.headers.get("Authorization"))
    ok = False
    for value in values:
        if not value:
            continue
        v = value.strip()
        if v[:7].lower() == "bearer ":
            v = v[7:].strip()
        try:
            # aiohttp reads header bytes that are not UTF-8 as surrogate escapes
            vb = v.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            continue
        for t in tokens:
            ok |= hmac.compare_digest(vb, t)
    return ok


def authorised(cfg: ServiceConfig, request: web.Request, tokens: list[bytes]) -> bool:
    if not tokens:
        return cfg.allow_anonymous
    return _check_token(cfg, request, tokens)


async def _discard(request: web.Request, timeout: float) -> bool:
    """Read and drop a body announced as at most ``DRAIN_MAX`` bytes; whether it was."""
    n = request.content_length
    if n is None or n > DRAIN_MAX:
        return False
    try:
        async with asyncio.timeout(timeout):
            while await request.content.readany():
                pass
    except (TimeoutError, RequestPayloadError, ConnectionError):
        return False
    return True


def api_authorised(cfg: ServiceConfig, request: web.Request, tokens: list[bytes]) -> bool:
    """The API token, always in ``Authorization: Bearer`` (``auth_header`` is the
    ingest routes' header)."""
    return bool(tokens) and _check_token(cfg, request, tokens, header="Authorization")


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

    def _simulated(self, integration: str) -> Answer:
        """A The Things Stack uplink simulated from its console (``"simulated": true``):
        by default never stored as measurement data (``simulated_uplinks``)."""
        mode = self.cfg.simulated_uplinks
        if mode == "reject":
            return self.bad(integration, 400, "simulated uplink refused (simulated_uplinks = reject)")
        self.stats.uplink(integration, "simulated")
        return Answer(202, {"status": "ignored", "reason": "simulated uplink, not stored (simulated_uplinks = ignore)"})

    async def admit(self, request: web.Request, integration: str) -> Uplink | Answer:
        """The request's uplink, or the answer that ends the request here. A body
        left unread by that answer (401, 413, 415, ...) is read and dropped when it is
        announced as at most ``DRAIN_MAX`` bytes (so an ordinary client still reads
        the answer); otherwise the connection is closed after the answer, and the
        body is never read."""
        got = await self._admit(request, integration)
        if isinstance(got, Answer) and not got.close and not request.content.is_eof() \
                and not await _discard(request, self.cfg.read_timeout):
            got = replace(got, close=True)
        return got

    async def _admit(self, request: web.Request, integration: str) -> Uplink | Answer:
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
        encoding = request.headers.get("Content-Encoding", "").strip().lower()
        if encoding not in ENCODINGS:
            return self.bad(integration, 415, f"Content-Encoding {encoding[:40]!r} is not supported "
                                              "(gzip, deflate or none)")
        if integration == "chirpstack":
            event = request.query.get("event")
            if not event:
                # ChirpStack always names the event: without it the query string was
                # lost on the way, and the body may well be an uplink - refuse, never
                # acknowledge data that is not stored
                return self.bad(integration, 400, "no ChirpStack event given: the URL must end in ?event=up "
                                                  "(ChirpStack adds it; a proxy may have stripped it)")
            if event != "up":
                return self.ignored(integration, f"ChirpStack event {event!r} is not handled")
        try:
            if request.content.is_eof():  # the whole body has arrived: reading it cannot wait
                body = await request.read()
            else:
                async with asyncio.timeout(cfg.read_timeout):
                    body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self.bad(integration, 413, f"the body exceeds the limit of {limit} bytes")
        except RequestPayloadError as e:  # e.g. "Content-Encoding: gzip" on a body that is not
            ans = self.bad(integration, 400, f"the body cannot be read as its Content-Encoding "
                                             f"{encoding or 'identity'!r} says: {payload_reason(e)}")
            return Answer(ans.status, ans.body, close=True)
        except TimeoutError:  # a client trickling its body must not hold a handler forever
            ans = self.bad(integration, 408, f"the body did not arrive within {cfg.read_timeout:g} s")
            return Answer(ans.status, ans.body, close=True)
        try:
            # (a substring test first: the usual body goes the fast path unparsed)
            if (integration == "ttn" and cfg.simulated_uplinks != "accept" and b'"simulated"' in body
                    and ingest.parse_json_body(body).get("simulated") is True):
                return self._simulated(integration)
            return webhook.parse_body(integration, body, None, cfg.default_region)
        except ingest.Ignored as e:
            return self.ignored(integration, e.reason)
        except ingest.IngestError as e:
            return self.bad(integration, 400, str(e))
