"""Every error answer is JSON, ``{"error": "<what is wrong>"}`` (docs/api.md).

Two places produce error pages besides the handlers: aiohttp's router and its
``Expect`` handling (404, 405, 417, raised as :class:`aiohttp.web.HTTPException`
inside the application: :func:`json_errors`, a middleware, turns them into JSON, and
answers an unexpected exception with a JSON 500 logged in one line), and aiohttp's
request parser, which answers a malformed request (a bad request line, a header
that cannot be parsed, a body in an encoding it cannot decode) before any
application code runs: :class:`JsonRunner` serves the application with a protocol
handler whose error pages are JSON as well, and logs them as one line, not as a
traceback per hostile request.

:class:`JsonRunner` also closes a connection whose request body was not read
instead of reading it ("lingering"): after a 401 or 413 a client announcing 4 GiB
gets the answer and the connection closed, not 4 GiB read first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web, web_protocol, web_server
from aiohttp.http_exceptions import HttpProcessingError
from aiohttp.web_protocol import RequestPayloadError
from aiohttp.web_urldispatcher import _default_expect_handler

log = logging.getLogger("collector.http")


def json_error(status: int, message: str, headers: Any = None) -> web.Response:
    resp = web.Response(body=orjson.dumps({"error": message}), status=status, headers=headers,
                        content_type="application/json", charset="utf-8")
    return resp


def payload_reason(e: BaseException) -> str:
    """The first line of an aiohttp payload error (a bad gzip body, ...)."""
    cause = e.__cause__ or e
    text = str(getattr(cause, "message", None) or cause).strip()
    return text.splitlines()[0][:200] if text else type(cause).__name__


def _message(request: web.Request, e: web.HTTPException) -> str:
    if isinstance(e, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(e.allowed_methods))
        return f"method {request.method} is not allowed on {request.path} (allowed: {allowed})"
    if isinstance(e, web.HTTPNotFound) and e.text in ("404: Not Found", None):
        return f"no route {request.method} {request.path}"
    text = (e.text or e.reason or "").strip()
    if text.startswith(f"{e.status}: "):
        text = text[len(f"{e.status}: "):]
    return text or HTTPStatus(e.status).phrase


@web.middleware
async def json_errors(request: web.Request, handler) -> web.StreamResponse:
    """aiohttp's own error pages (404, 405, 417, ...) as JSON; an unexpected
    exception a JSON 500, logged once with its traceback in one line."""
    try:
        return await handler(request)
    except web.HTTPException as e:
        if e.status < 400 or (e.content_type == "application/json"):
            raise
        headers = {k: v for k, v in e.headers.items() if k.lower() not in ("content-type", "content-length")}
        return json_error(e.status, _message(request, e), headers)
    except RequestPayloadError as e:  # a body that does not decode as its Content-Encoding says
        return json_error(400, f"the body cannot be read: {payload_reason(e)}", {"Connection": "close"})
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:  # noqa: BLE001 - the client gets a JSON 500, the log the traceback
        log.exception("event=internal_error method=%s path=%r", request.method, request.path[:200])
        return json_error(500, "internal error (logged by the collector)")


async def expect_json(request: web.Request) -> web.StreamResponse | None:
    """The ``Expect`` handling of every route (aiohttp runs it outside the
    middlewares): ``100-continue`` as aiohttp does it, anything else a JSON 417."""
    try:
        return await _default_expect_handler(request)
    except web.HTTPExpectationFailed:
        expect = request.headers.get("Expect", "")[:60]
        return json_error(417, f"Expect: {expect!r} is not supported (only 100-continue)", {"Connection": "close"})


class _JsonRequestHandler(web_protocol.RequestHandler):
    def handle_error(self, request: Any, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if status == 500 or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        text = exc.message if isinstance(exc, HttpProcessingError) and exc.message else message
        text = str(text or HTTPStatus(status).phrase).strip().splitlines()[0][:300]
        log.info("event=malformed_request status=%d remote=%s error=%r", status, request.remote, text)
        resp = json_error(status, f"malformed request: {text}")
        resp.force_close()
        return resp


class _JsonServer(web_server.Server):
    #: connections held at most (None: no bound); set by :class:`JsonRunner`
    max_connections: int | None = None
    evicted = 0

    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: web_protocol.RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if self.max_connections is None:
            return
        live = [h for h in self._connections if h.transport is not None]  # (closed ones linger a moment)
        if len(live) <= self.max_connections:
            return
        # over the bound: the oldest connection that is not in a request (idle, or
        # still sending its headers) makes room; a new connection is never refused
        # for a client that holds many half-sent ones
        victim = next((h for h in live if h is not handler and not h._request_in_progress), handler)
        self.evicted += 1
        ACCEPT_LOG.note("event=connection_evicted", f"max_connections={self.max_connections}")
        victim.force_close()


class JsonRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose protocol answers malformed requests
    with JSON, closes (rather than drains) a connection whose body went unread, and
    holds at most ``max_connections`` connections."""

    def __init__(self, app: web.Application, max_connections: int | None = None, **kwargs: Any):
        kwargs.setdefault("lingering_time", 0)
        self._max_connections = max_connections
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = _JsonServer
        server.max_connections = self._max_connections  # type: ignore[attr-defined]
        return server


class RateLimitedLog:
    """At most one line per ``every`` seconds of a noisy event (the number left out
    is in the next line), and never a traceback: the event loop logs a failed
    ``accept()`` (file descriptors exhausted) with a traceback each time, 24 MB in
    20 s under 1,100 half-sent requests."""

    def __init__(self, logger: logging.Logger, every: float = 10.0):
        self.logger = logger
        self.every = every
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def allow(self, event: str) -> int | None:
        """Whether ``event`` may be logged now: the count left out since, or None."""
        now = time.monotonic()
        if now - self._last.get(event, -1e18) < self.every:
            self._held[event] = self._held.get(event, 0) + 1
            return None
        self._last[event] = now
        return self._held.pop(event, 0)

    def note(self, event: str, detail: str) -> None:
        held = self.allow(event)
        if held is not None:
            self.logger.warning("%s %s suppressed=%d", event, detail, held)

    def filter(self, record: logging.LogRecord) -> bool:
        """A :class:`logging.Filter` for the ``asyncio`` logger."""
        msg = str(record.msg)
        if not msg.startswith("socket.accept() out of system resource"):
            return True
        held = self.allow("accept_failed")
        if held is None:
            return False
        err = record.exc_info[1] if record.exc_info else None
        record.msg, record.args = "event=accept_failed error=%r suppressed=%d", (str(err or msg)[:200], held)
        record.exc_info = record.exc_text = None
        record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


ACCEPT_LOG = RateLimitedLog(log)

#: file descriptors kept for the database, the log, the workers' channel, delivery
FD_RESERVE = 128


def connection_bound(configured: int) -> int:
    """The connections to hold at most: ``configured``, or (0) what the file
    descriptor limit allows, which is first raised to its hard limit. Installs the
    rate limit on the event loop's accept-failure log."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    fit = max(16, (soft if soft != resource.RLIM_INFINITY else 1 << 20) - FD_RESERVE)
    if configured and configured > fit:
        log.warning("event=max_connections_lowered configured=%d used=%d detail=%r", configured, fit,
                    "the file descriptor limit allows no more")
    asyncio_log = logging.getLogger("asyncio")
    if ACCEPT_LOG.filter not in asyncio_log.filters:
        asyncio_log.addFilter(ACCEPT_LOG.filter)
    return min(configured, fit) if configured else fit

