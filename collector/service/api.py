"""The read API (``/api/...``), ``/healthz`` and ``/metrics``.

Every ``/api`` handler is wrapped by :func:`guarded`: the bearer token is checked,
and the messages the ingest path closed are assembled first, so what was
acknowledged is what the API shows. Store queries run in a thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from collector.core import ingest
from collector.service.gate import api_authorised
from collector.service.gate import error as answer_error
from collector.service.integrity import STORE_WATCH
from collector.service.keys import (
    API_TOKENS,
    CFG,
    CLOCK,
    COMMITTER,
    DELIVERY,
    METRICS,
    REASM,
    STOPPING,
    STORE,
    WORKERS,
    __version__,
)
from collector.service.loops import CLOSING
from collector.service.metrics import CONTENT_TYPE_LATEST
from collector.service.mqtt import MQTT
from collector.service.repairs import REPAIR, message_view
from collector.service.store import StoreUnavailable, op_retry_dead

MESSAGE_STATES = ("open", "complete", "partial", "incident")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error(status: int, message: str, headers: dict | None = None, **extra: Any) -> web.Response:
    return answer_error(status, message, headers, **extra).response()


def guarded(handler: Handler) -> Handler:
    """``handler`` behind the API token, after the pending closes are recorded."""
    async def wrapped(request: web.Request) -> web.StreamResponse:
        app = request.app
        if not app[API_TOKENS]:
            return error(401, "the API is closed: no api_token is configured (ingest tokens do not open it)")
        if not api_authorised(app[CFG], request, app[API_TOKENS]):
            return error(401, "missing or wrong token (the API token: Authorization: Bearer <api token>)")
        closing = app[CLOSING]
        if closing.busy:
            await closing.flush_closes()  # what was acknowledged is what the API shows
        return await handler(request)
    return wrapped


async def _q(fn: Callable, *args: Any) -> Any:
    return await asyncio.to_thread(fn, *args)


def _limit(request: web.Request) -> int:
    try:
        return max(1, min(1000, int(request.query.get("limit", "100"))))
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": "limit must be an integer"}),
                                 content_type="application/json") from None


async def healthz(request: web.Request) -> web.Response:
    app = request.app
    clock = app[CLOCK]
    committer = app.get(COMMITTER)
    delivery = app.get(DELIVERY)
    # (the group committer is the service's own: its task is alive while it commits)
    ok = (committer is not None and committer._task is not None and not committer._task.done()
          and not app[STOPPING].is_set())
    watch = app.get(STORE_WATCH)
    problem = await asyncio.to_thread(watch.check) if watch is not None else None
    ok = ok and problem is None
    body = {"status": "ok" if ok else "unavailable", "version": __version__,
            "now": clock.now(), "openMessages": len(app[REASM].open_messages()),
            "writeQueue": committer.depth if committer else None,
            "circuit": delivery.circuit.state(clock.now()) if delivery else None}
    workers = app.get(WORKERS)
    if workers is not None:
        body["workers"] = {"configured": app[CFG].workers, "running": workers.alive()}
    if problem is not None:
        body["problem"] = problem
    sub = app.get(MQTT)
    if sub is not None:
        body["mqtt"] = sub.health()
    return web.json_response(body, status=200 if ok else 503)


async def metrics(request: web.Request) -> web.Response:
    app = request.app
    await app[CLOSING].flush_closes()
    counts = await _q(app[STORE].counts)
    m = app[METRICS]
    m.open_messages.set(len(app[REASM].open_messages()))
    m.queue_depth.set(counts["documents"]["pending"])
    m.dead_letters.set(counts["documents"]["dead"])
    m.write_queue.set(app[COMMITTER].depth)
    m.circuit_open.set(1 if app[DELIVERY].circuit.state(app[CLOCK].now()) == "open" else 0)
    return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def messages(request: web.Request) -> web.Response:
    device = request.query.get("device")
    state = request.query.get("state")
    if state is not None and state not in MESSAGE_STATES:
        return error(400, f"state must be one of {', '.join(MESSAGE_STATES)}, not {state!r}")
    if device is not None and not ingest._HEX16.match(device):
        return error(400, f"device must be a DevEUI (16 hex digits), not {device!r}")
    rows = await _q(request.app[STORE].list_messages, device, state, _limit(request))
    return web.json_response({"messages": rows})


async def message(request: web.Request) -> web.Response:
    d = await _q(request.app[STORE].get_message, request.match_info["id"])
    if d is None:
        return error(404, f"no message {request.match_info['id']!r}")
    repair = await _q(message_view, request.app[REPAIR], request.app[STORE].query, d)
    if repair is not None:
        d["repair"] = repair
    return web.json_response(d)


async def incidents(request: web.Request) -> web.Response:
    rows = await _q(request.app[STORE].list_incidents, request.query.get("device"), _limit(request))
    return web.json_response({"incidents": rows})


async def incident(request: web.Request) -> web.Response:
    d = await _q(request.app[STORE].get_incident, request.match_info["id"])
    if d is None:
        return error(404, f"no incident {request.match_info['id']!r}")
    return web.json_response(d)


async def deadletters(request: web.Request) -> web.Response:
    rows = await _q(request.app[STORE].list_documents, "dead", _limit(request))
    return web.json_response({"deadletters": rows})


async def deadletter(request: web.Request) -> web.Response:
    d = await _q(request.app[STORE].get_document, request.match_info["id"])
    if d is None or d["state"] != "dead":
        return error(404, f"no dead letter {request.match_info['id']!r}")
    return web.json_response(d)


async def _retry(app: web.Application, uids: list[str] | None) -> int:
    try:
        n = await app[COMMITTER].submit(op_retry_dead(uids, app[CLOCK].now()))
    except StoreUnavailable as e:
        raise web.HTTPServiceUnavailable(text=json.dumps({"error": str(e)}),
                                         content_type="application/json") from None
    if n:
        app[DELIVERY].wake()
    return n


async def retry(request: web.Request) -> web.Response:
    uid = request.match_info["id"]
    n = await _retry(request.app, [uid])
    if not n:
        return error(404, f"no dead letter {uid!r}")
    return web.json_response({"retried": [uid]}, status=202)


async def retry_all(request: web.Request) -> web.Response:
    n = await _retry(request.app, None)
    return web.json_response({"retried": n}, status=202)


async def status(request: web.Request) -> web.Response:
    app = request.app
    counts = await _q(app[STORE].counts)
    counts["now"] = app[CLOCK].now()
    counts["circuit"] = app[DELIVERY].circuit.state(app[CLOCK].now())
    counts["repair"] = app[REPAIR].status()
    return web.json_response(counts)
