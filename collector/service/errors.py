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
    def __call__(self) -> web_protocol.RequestHandler:
        return _JsonRequestHandler(self, loop=self._loop, **self._kwargs)


class JsonRunner(web.AppRunner):
    """An :class:`aiohttp.web.AppRunner` whose protocol answers malformed requests
    with JSON and closes (rather than drains) a connection whose body went unread."""

    def __init__(self, app: web.Application, **kwargs: Any):
        kwargs.setdefault("lingering_time", 0)
        super().__init__(app, **kwargs)

    async def _make_server(self) -> web_server.Server:
        server = await super()._make_server()
        server.__class__ = _JsonServer
        return server

