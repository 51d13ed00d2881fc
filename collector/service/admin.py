"""The admin routes: ``/admin/clock`` moves the manual clock (virtual time)."""

from __future__ import annotations

import math

from aiohttp import web

from collector.service.api import error
from collector.service.clock import ManualClock
from collector.service.keys import CLOCK
from collector.service.loops import CLOSING
from collector.service.repairs import REPAIR

#: the largest clock value or step taken (year 9999 in Unix seconds: times past it cannot be written)
MAX_SECONDS = 253_402_300_799.0


async def clock(request: web.Request) -> web.Response:
    """Virtual time: ``{"now": <unix s>}`` or ``{"advance": <s>}`` moves the manual
    clock, ``{"stepWall": <s>}`` steps its wall clock alone; then runs the closing and
    delivery due up to then, and hands over the downlinks due (so a caller driving
    virtual time knows every downlink due by then has reached its network server)."""
    clk = request.app[CLOCK]
    if not isinstance(clk, ManualClock):
        return error(404, "the clock is not manual (start the service with --clock manual)")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "malformed JSON")
    keys = [k for k in ("now", "advance", "stepWall") if k in body] if isinstance(body, dict) else []
    if len(keys) != 1:
        return error(400, 'give {"now": <unix seconds>}, {"advance": <seconds>} or {"stepWall": <seconds>}')
    v = body[keys[0]]
    if isinstance(v, bool) or not isinstance(v, int | float):
        return error(400, "the time must be a number")
    if not math.isfinite(v) or abs(v) > MAX_SECONDS:
        return error(400, f"the time must be a finite number of seconds (|t| <= {MAX_SECONDS:g}), not {v!r}")
    try:
        if keys[0] == "now":
            clk.set(float(v))
        elif keys[0] == "advance":
            clk.advance(float(v))
        else:  # the wall clock alone steps (either way); deadlines and retries must not notice
            clk.step_wall(float(v))
    except ValueError as e:
        return error(400, str(e))
    ran = await request.app[CLOSING].tick()
    hub = request.app.get(REPAIR)
    if hub is not None and hub.agent is not None:
        ran["downlinks"] = await hub.agent.run_due()
    return web.json_response({"now": clk.now(), "wall": clk.wall(), **ran})
