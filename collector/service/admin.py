"""The admin routes: ``/admin/clock`` moves the manual clock (virtual time)."""

from __future__ import annotations

import math

from aiohttp import web

from collector.service.api import error
from collector.service.clock import ManualClock
from collector.service.keys import CLOCK
from collector.service.loops import CLOSING

#: the largest clock value or step taken (year 9999 in Unix seconds: times past it cannot be written)
MAX_SECONDS = 253_402_300_799.0


async def clock(request: web.Request) -> web.Response:
    """Virtual time: ``{"now": <unix s>}`` or ``{"advance": <s>}`` moves the manual
    clock, then runs the closing and delivery due up to then."""
    clk = request.app[CLOCK]
    if not isinstance(clk, ManualClock):
        return error(404, "the clock is not manual (start the service with --clock manual)")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "malformed JSON")
    if not isinstance(body, dict) or not (("now" in body) ^ ("advance" in body)):
        return error(400, 'give {"now": <unix seconds>} or {"advance": <seconds>}')
    v = body.get("now", body.get("advance"))
    if isinstance(v, bool) or not isinstance(v, int | float):
        return error(400, "the time must be a number")
    if not math.isfinite(v) or abs(v) > MAX_SECONDS:
        return error(400, f"the time must be a finite number of seconds (|t| <= {MAX_SECONDS:g}), not {v!r}")
    try:
        if "now" in body:
            clk.set(float(v))
        else:
            clk.advance(float(v))
    except ValueError as e:
        return error(400, str(e))
    ran = await request.app[CLOSING].tick()
    return web.json_response({"now": clk.now(), **ran})
