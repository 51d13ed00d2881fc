"""The ingest path of the process that owns the state: reassemble, commit, answer.

The three ingest routes run the :class:`~collector.service.gate.IngestGate` and
hand what it admits to :class:`Ingest`, which feeds the reassembler and answers
202 only after the fragment and the message state are committed (group commit,
:class:`collector.service.store.GroupCommitter`). :meth:`Ingest.enter` (synchronous:
feed and queue the commit) and :meth:`Ingest.settle` (the answer once committed) are
apart so the HTTP workers' channel (:mod:`collector.service.workers`) can enter a
whole batch before waiting for one commit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from typing import Any

from aiohttp import web

from collector.core.reassembly import Message, PollEvent, Reassembler
from collector.core.uplink import Uplink
from collector.core.wire import FragmentError
from collector.core.wire2 import FPORT_V2
from collector.service.clock import Clock
from collector.service.config import ServiceConfig
from collector.service.consistency import StateGuard
from collector.service.downlinks import downlink_route
from collector.service.gate import Answer, IngestGate
from collector.service.gate import error as answer_error
from collector.service.keys import STOPPING
from collector.service.loops import Closing
from collector.service.metrics import Metrics
from collector.service.repairs import RepairHub
from collector.service.store import (
    GroupCommitter,
    Op,
    StoreUnavailable,
    message_header,
    op_incident,
    op_ingest,
    together,
    uplink_text,
)

log = logging.getLogger("collector.service")


@dataclasses.dataclass(slots=True)
class Pending:
    """An uplink fed to the reassembler whose commit is under way."""
    future: asyncio.Future
    integration: str
    dev_eui: str
    status: str
    message: Any
    index: int
    closed: list[Message]
    poll: PollEvent | None = None
    #: the uplink ended the repair hold of a message (its deadline came earlier)
    released: bool = False


class Ingest:
    """Feeds parsed uplinks to the reassembler and commits them; counts the outcomes
    (:class:`collector.service.gate.IngestStats`)."""

    def __init__(self, cfg: ServiceConfig, clock: Clock, metrics: Metrics, reasm: Reassembler,
                 committer: GroupCommitter, closing: Closing, guard: StateGuard):
        self.cfg = cfg
        self.clock = clock
        self.metrics = metrics
        self.reasm = reasm
        self.committer = committer
        self.closing = closing
        self.gate = IngestGate(cfg, self)
        #: the reassembler changes only with what was committed (:mod:`collector.service.consistency`)
        self.guard = guard
        #: the v2 repair loop (set when the service starts)
        self.repair: RepairHub | None = None
        self._outcome_counters: dict[tuple[str, str], Any] = {}
        self._request_counters: dict[tuple[str, int], Any] = {}

    # ------------------------------------------------------------------ counting

    def uplink(self, integration: str, outcome: str, n: int = 1) -> None:
        """Count ``n`` uplinks by outcome (:class:`collector.service.gate.IngestStats`)."""
        key = (integration, outcome)
        c = self._outcome_counters.get(key)
        if c is None:
            c = self._outcome_counters[key] = self.metrics.uplinks.labels(integration, outcome)
        c.inc(n)

    def answered(self, integration: str, status: int, seconds: float) -> None:
        """Count an ingest request by status code, and its latency."""
        key = (integration, status)
        c = self._request_counters.get(key)
        if c is None:
            c = self._request_counters[key] = (self.metrics.requests.labels(integration, str(status)),
                                               self.metrics.ingest_latency.labels(integration))
        c[0].inc()
        c[1].observe(seconds)

    def merge_worker_stats(self, stats: dict) -> None:
        """Add what an HTTP worker process counted (:mod:`collector.service.workers`)."""
        for integration, outcome, n in stats.get("uplinks", ()):
            self.uplink(integration, outcome, n)
        for integration, status, latencies in stats.get("requests", ()):
            for seconds in latencies:
                self.answered(integration, status, seconds)

    # ------------------------------------------------------------------ ingest

    async def accept(self, up: Uplink, integration: str, route: dict | None = None) -> Answer:
        """Feed one parsed uplink to the reassembler and commit it; the answer."""
        entered = self.enter(up, integration, route)
        if isinstance(entered, Answer):
            return entered
        fut = entered.future
        if not fut.done():
            # shielded (asyncio.wait costs a task-set and callbacks per request): a
            # cancelled request must not cancel its commit, which the state guard would
            # take for a failed one; settle() reads the outcome, so it is not raised here
            try:
                await asyncio.shield(fut)
            except asyncio.CancelledError:
                if asyncio.current_task().cancelling():  # the request itself was cancelled
                    raise
            except Exception:  # noqa: BLE001 - settle() answers it (503)
                pass
        return self.settle(entered)

    def enter(self, up: Uplink, integration: str, route: dict | None = None) -> Answer | Pending:
        """The synchronous part of :meth:`accept`: feed the reassembler and queue the
        commit. Answers at once what needs no commit; otherwise the commit to wait
        for before :meth:`settle`. ``route``: the downlink route a v2 uplink's
        request brought (:func:`collector.service.downlinks.route_from_headers`)."""
        now = self.clock.now()
        if up.received_ms is None:  # the body carried no receive time: the collector's (a time stamp: wall time)
            up = dataclasses.replace(up, received_ms=int(self.clock.wall() * 1000))
        row = up.to_dict()
        try:
            # serialised before the reassembler sees it: what cannot be stored must
            # not be counted as held (a repeat would be answered "duplicate")
            text = uplink_text(row)
        except TypeError as e:
            return self.gate.bad(integration, 400, f"the uplink cannot be stored: {e}")
        refusal = self.guard.refusal()
        if refusal is not None:  # before the reassembler sees the uplink: nothing to undo
            self.uplink(integration, "unavailable")
            return answer_error(503, f"the store cannot take the uplink now: {refusal}", {"Retry-After": "5"})
        try:
            res = self.reasm.feed(up, now)
        except FragmentError as e:
            return self.gate.bad(integration, 400, f"invalid fragment header: {e.detail}", code=e.code)
        if res.status == "ignored":
            return self.gate.ignored(integration, res.reason or "ignored")
        msg = res.message
        assert msg is not None or res.status == "poll"  # a v2 poll for a message not held
        index = up.payload[1]
        closed = res.closed
        # The fragment and the new state of every message it changed are committed
        # before the answer; a message it closed is recorded as closed (its header
        # says so) and assembled by the aggregator afterwards - or, after a crash,
        # at the next start.
        # (a v2 poll is logged, not held; it may have moved its open message's deadline)
        repair = None
        released = res.released
        if up.fport == FPORT_V2:
            dev = up.dev_eui
            if self.repair is not None:
                repair = self.repair.on_uplink(up, route, res, now, lambda i: self.reasm.is_open(dev, i))
            # messages held open for repair rows the collector will no longer ask for
            # close at their own deadline (the new one commits with this uplink)
            more = self.reasm.release(dev, repair.settled if repair is not None else None)
            if more:
                released = [*released, *more]
        opened = res.status == "accepted" or (res.status == "poll" and isinstance(msg, Message) and msg.closed is None)
        headers = [message_header(msg)] if opened else []
        headers.extend(message_header(m) for m in closed if m is not msg)
        headers.extend(message_header(m) for m in released if m is not msg and m.closed is None)
        ops: list[Op] = [op_ingest(now, msg.uid if msg else None, index, res.status, row, headers,
                                   self.reasm.next_seq, text)]
        if closed:
            ops.extend(self._cap_ops(closed, now))
            self.closing.pending.extend(closed)
        if repair is not None:
            # the repair state and any downlink it made due commit with the uplink
            ops.extend(repair.ops)
        try:
            fut = self.committer.submit_nowait(ops[0] if len(ops) == 1 else together(ops))
        except StoreUnavailable as e:
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(e)
        self.guard.track(fut)
        if repair is not None:
            fut.add_done_callback(repair.committed)
        if closed:
            # closed messages are gone from the open set: record them in any case
            self.closing.wake()
        return Pending(fut, integration, up.dev_eui, res.status, msg, index, closed, res.poll, bool(released))

    def settle(self, p: Pending) -> Answer:
        """The answer once the commit :meth:`enter` queued has finished (committed,
        failed, or cancelled by a shutdown)."""
        fut = p.future
        exc: BaseException | None = (StoreUnavailable("the commit was cancelled") if fut.cancelled()
                                     else fut.exception())
        if exc is not None:
            self.uplink(p.integration, "unavailable")
            log.error("event=store_unavailable integration=%s error=%r", p.integration, str(exc))
            return answer_error(503, f"the store cannot take the uplink now: {exc}", {"Retry-After": "5"})
        self.uplink(p.integration, p.status)
        msg = p.message
        if p.released:  # a deadline came earlier: the aggregator's timer may be later
            self.closing.wake()
        if p.poll is not None:
            ev = p.poll
            return Answer(202, {"status": "poll", "message": msg.uid if msg else None, "held": ev.held,
                                "need": ev.need, "rebuilt": ev.rebuilt})
        target = self.closing.target
        if msg.closed is None and (target is None or msg.closes < target):
            self.closing.wake()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=uplink integration=%s dev=%s status=%s message=%s index=%d", p.integration,
                      p.dev_eui, p.status, msg.uid, p.index)
        return Answer(202, {"status": p.status, "message": msg.uid, "fragment": p.index,
                            "closed": [m.uid for m in p.closed]})

    def _cap_ops(self, closed: list[Message], now: float) -> list[Op]:
        """The incidents of messages an open-message cap closed early (decided at
        once: they depend on what is open now)."""
        ops: list[Op] = []
        for m in closed:
            if m.close_reason != "evicted":
                continue
            n = self.reasm.open_count(m.dev_eui)
            if n >= self.cfg.max_open_per_device:
                code, detail = "device_open_cap", (
                    f"device {m.dev_eui} reached the cap of {self.cfg.max_open_per_device} open messages; "
                    f"message {m.uid} (msg_id {m.msg_id}) was closed early")
            else:
                code, detail = "open_cap", (
                    f"the collector reached the cap of {self.cfg.max_open_total} open messages; "
                    f"message {m.uid} was closed early")
            ops.append(op_incident(None, m.dev_eui, m.msg_id, now, code, detail, {"messageId": m.uid}))
            self.metrics.incidents.labels(code).inc()
            self.metrics.data_loss.labels("incident", code).inc()
            log.warning("event=open_cap dev=%s message=%s code=%s", m.dev_eui, m.uid, code)
        return ops


INGEST = web.AppKey("ingest", Ingest)


def ingest_handler(integration: str):
    """The request handler of one integration's ingest route."""
    async def handler(request: web.Request) -> web.Response:
        t0 = time.perf_counter()
        ingest = request.app[INGEST]
        if request.app[STOPPING].is_set():
            ans = answer_error(503, "the collector is shutting down", {"Retry-After": "5"})
        else:
            up = await ingest.gate.admit(request, integration)
            ans = up if isinstance(up, Answer) else await ingest.accept(up, integration,
                                                                       downlink_route(up, integration, request))
        ingest.answered(integration, ans.status, time.perf_counter() - t0)
        return ans.response()
    return handler
