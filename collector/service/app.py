"""The collector service: webhook ingest, durable store, aggregator and delivery.

:class:`CollectorService` wires the sans-IO core (:mod:`collector.core.reassembly`,
:mod:`collector.core.assemble`, :mod:`collector.service.delivery` policy) to aiohttp and SQLite:

- ingest routes parse the three formats (:mod:`collector.core.ingest`), feed the
  reassembler and answer 202 only after the fragment and the message state are
  committed (group commit, :class:`collector.service.store.GroupCommitter`);
- the aggregator closes messages at their deadlines on the injected clock, turns
  them into documents or incidents and queues documents durably;
- the delivery agent posts documents to the Web App;
- JSON APIs, ``/healthz`` and ``/metrics`` show the state.

``run_service`` runs it until SIGTERM/SIGINT and shuts down gracefully: stop
accepting, finish in-flight requests and their commits, stop delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import importlib.metadata
import json
import logging
import signal
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from collector.core import ingest
from collector.core.reassembly import Message, Reassembler
from collector.core.uplink import Uplink
from collector.core.wire import FragmentError
from collector.service.aggregator import Assembler
from collector.service.clock import Clock, ManualClock, make_clock, wait_first
from collector.service.config import ServiceConfig
from collector.service.consistency import StateGuard
from collector.service.delivery import DeliveryAgent
from collector.service.gate import Answer, IngestGate, authorised
from collector.service.gate import error as answer_error
from collector.service.integrity import FileWatch, open_store
from collector.service.logs import KeyValueFormatter, setup_logging  # noqa: F401 (re-exported)
from collector.service.metrics import CONTENT_TYPE_LATEST, Metrics
from collector.service.registry import load_file
from collector.service.store import (
    GroupCommitter,
    Op,
    Store,
    StoreUnavailable,
    message_header,
    op_closed,
    op_device,
    op_incident,
    op_ingest,
    op_prune,
    op_retry_dead,
    together,
    uplink_text,
)
from collector.service.workers import ChannelServer, PrivateDir, WorkerPool, reserve_port

log = logging.getLogger("collector.service")

try:
    __version__ = importlib.metadata.version("lora-collector")
except importlib.metadata.PackageNotFoundError:  # running from a source tree
    __version__ = "0+unknown"

MESSAGE_STATES = ("open", "complete", "partial", "incident")
#: clock seconds between sweeps of closed messages older than the duplicate window
SWEEP_INTERVAL = 10.0
#: allocations between collections of the garbage collector's first generation (``collector serve``)
GC_THRESHOLD = 20_000


def error(status: int, message: str, headers: dict | None = None, **extra: Any) -> web.Response:
    return answer_error(status, message, headers, **extra).response()


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


class CollectorService:
    def __init__(self, cfg: ServiceConfig, clock: Clock | None = None):
        cfg.validate()
        self.cfg = cfg
        self.clock: Clock = clock or make_clock(cfg.clock, cfg.clock_start)
        self.metrics = Metrics()
        self.reasm = Reassembler(cfg.reassembly_settings())
        self.store: Store | None = None
        #: the database file and its WAL, watched for deletion, replacement, truncation
        self.store_watch: FileWatch | None = None
        self.committer: GroupCommitter | None = None
        self.delivery: DeliveryAgent | None = None
        self.gate = IngestGate(cfg, self)
        #: the reassembler changes only with what was committed (:mod:`collector.service.consistency`)
        self.guard = StateGuard(self)
        self._api_tokens = [t.encode() for t in (cfg.api_token or [*cfg.ingest_token, *cfg.ttn_token,
                                                                     *cfg.chirpstack_token, *cfg.generic_token])]
        self._agg_wake = asyncio.Event()
        self._agg_target: float | None = None
        #: clock time of the next sweep of closed messages past the duplicate window
        self._next_sweep = 0.0
        self._expire_lock = asyncio.Lock()
        self._retry_ops: list[Op] = []
        #: messages the ingest path closed, waiting to be assembled (by the aggregator)
        self._pending_close: list[Message] = []
        self._close_lock = asyncio.Lock()
        #: assembles closed messages (in a worker process while closes come fast)
        self.assembler = Assembler()
        self._outcome_counters: dict[tuple[str, str], Any] = {}
        self._request_counters: dict[tuple[str, int], Any] = {}
        self._tasks: list[asyncio.Task] = []
        self._stopping = False
        #: the HTTP worker processes, when there are any (:func:`run_service`)
        self.workers: WorkerPool | None = None

    # ------------------------------------------------------------------ lifecycle

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.body_limit)
        r = app.router
        r.add_post("/uplink/ttn", self._ingest_handler("ttn"))
        r.add_post("/uplink/chirpstack", self._ingest_handler("chirpstack"))
        r.add_post("/uplink", self._ingest_handler("generic"))
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics_handler)
        r.add_get("/api/messages", self._api(self.api_messages))
        r.add_get("/api/messages/{id}", self._api(self.api_message))
        r.add_get("/api/incidents", self._api(self.api_incidents))
        r.add_get("/api/incidents/{id}", self._api(self.api_incident))
        r.add_get("/api/deadletters", self._api(self.api_deadletters))
        r.add_get("/api/deadletters/{id}", self._api(self.api_deadletter))
        r.add_post("/api/deadletters/retry", self._api(self.api_retry_all))
        r.add_post("/api/deadletters/{id}/retry", self._api(self.api_retry))
        r.add_get("/api/status", self._api(self.api_status))
        r.add_post("/admin/clock", self._api(self.admin_clock))
        app.on_startup.append(self._on_startup)
        app.on_shutdown.append(self._on_shutdown)
        app.on_cleanup.append(self._on_cleanup)
        return app

    async def _on_startup(self, app: web.Application) -> None:
        await self.start()

    async def start(self) -> None:
        cfg = self.cfg
        if not cfg.any_ingest_token:
            if not cfg.allow_anonymous:
                raise RuntimeError("no ingest token configured: set --ingest-token (or allow_anonymous = true)")
            log.warning("event=auth_disabled detail=%r", "no ingest token configured; ingest is open to anyone")
        self.store = await asyncio.to_thread(open_store, cfg.db)  # DatabaseUnusable: one line, no traceback
        self.store_watch = FileWatch(cfg.db)
        self.committer = GroupCommitter(self.store, cfg.commit_batch, cfg.max_pending_writes,
                                        on_commit=self.metrics.committed)
        self.committer.start()
        now = self.clock.now()
        msgs, next_seq = await asyncio.to_thread(self.store.restore_state, now, cfg.duplicate_window)
        self.reasm.load(msgs, next_seq)
        # closed by an acknowledged uplink, not yet assembled when the service stopped
        self._pending_close = [Message.from_dict(d) for d in msgs if d.get("pending_close")]
        if cfg.devices_file:
            devices = load_file(cfg.devices_file)
            await self.committer.submit_many([op_device(d.dev_eui, d.token, d.name, now) for d in devices])
            log.info("event=devices_imported file=%r count=%d", cfg.devices_file, len(devices))
        self.delivery = DeliveryAgent(cfg, self.store, self.committer, self.clock, self.metrics)
        await self.delivery.start()
        n_open = len(self.reasm.open_messages())
        log.info("event=started version=%s db=%r open_messages=%d next_seq=%d clock=%s webapp=%r policy=%s "
                 "timeout=%g", __version__, cfg.db, n_open, self.reasm.next_seq, cfg.clock, cfg.webapp_url or None,
                 cfg.deadline_policy, cfg.message_timeout)
        if self._pending_close:
            log.info("event=assembling_closed count=%d", len(self._pending_close))
        await self.flush_closes()
        # messages whose deadline passed while the service was down close now
        await self.expire_due()
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._aggregator(), name="aggregator"),
                       loop.create_task(self._pruner(), name="pruner"),
                       loop.create_task(self.store_watch.run(lambda: self._stopping), name="store-watch")]

    async def _on_shutdown(self, app: web.Application) -> None:
        self._stopping = True

    async def _on_cleanup(self, app: web.Application) -> None:
        await self.stop()

    async def stop(self) -> None:
        """In-flight requests have finished (aiohttp waits for them before cleanup):
        stop the background tasks and delivery, commit what is queued, close."""
        self._stopping = True
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await t
                except Exception:  # noqa: BLE001 - a failed task must not stop the shutdown
                    log.exception("event=task_failed task=%s", t.get_name())
        steps = [("closing", self.flush_closes if self.committer else None),
                 ("assembler", self.assembler.close),
                 ("delivery", self.delivery.stop if self.delivery else None),
                 ("store", self.committer.close if self.committer else None)]
        for name, step in steps:
            if step is None:
                continue
            try:
                await step()
            except Exception:  # noqa: BLE001
                log.exception("event=shutdown_step_failed step=%s", name)
        if self.store is not None:
            self.store.close()
        log.info("event=stopped")

    # ------------------------------------------------------------------ auth

    def _api(self, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if not authorised(self.cfg, request, self._api_tokens):
                return error(401, "missing or wrong token (Authorization: Bearer <token>)")
            if self._pending_close or self._close_lock.locked():
                await self.flush_closes()  # what was acknowledged is what the API shows
            return await handler(request)
        return wrapped

    # ------------------------------------------------------------------ ingest

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

    def _ingest_handler(self, integration: str):
        async def handler(request: web.Request) -> web.Response:
            t0 = time.perf_counter()
            if self._stopping:
                ans = answer_error(503, "the collector is shutting down", {"Retry-After": "5"})
            else:
                up = await self.gate.admit(request, integration)
                ans = up if isinstance(up, Answer) else await self.accept(up, integration)
            self.answered(integration, ans.status, time.perf_counter() - t0)
            return ans.response()
        return handler

    async def accept(self, up: Uplink, integration: str) -> Answer:
        """Feed one parsed uplink to the reassembler and commit it; the answer."""
        entered = self.enter(up, integration)
        if isinstance(entered, Answer):
            return entered
        await asyncio.wait([entered.future])
        return self.settle(entered)

    def enter(self, up: Uplink, integration: str) -> Answer | Pending:
        """The synchronous part of :meth:`accept`: feed the reassembler and queue the
        commit. Answers at once what needs no commit; otherwise the commit to wait
        for before :meth:`settle`."""
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
        assert msg is not None
        index = up.payload[1]
        closed = res.closed
        # The fragment and the new state of every message it changed are committed
        # before the answer; a message it closed is recorded as closed (its header
        # says so) and assembled by the aggregator afterwards - or, after a crash,
        # at the next start.
        headers = [message_header(msg)] if res.status == "accepted" else []
        headers.extend(message_header(m) for m in closed if m is not msg)
        ops: list[Op] = [op_ingest(now, msg.uid, index, res.status, row, headers, self.reasm.next_seq, text)]
        if closed:
            ops.extend(self._cap_ops(closed, now))
            self._pending_close.extend(closed)
        assert self.committer is not None
        try:
            fut = self.committer.submit_nowait(ops[0] if len(ops) == 1 else together(ops))
        except StoreUnavailable as e:
            fut = asyncio.get_running_loop().create_future()
            fut.set_exception(e)
        self.guard.track(fut)
        if closed:
            # closed messages are gone from the open set: record them in any case
            self._agg_wake.set()
        return Pending(fut, integration, up.dev_eui, res.status, msg, index, closed)

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
        if msg.closed is None and (self._agg_target is None or msg.deadline < self._agg_target):
            self._agg_wake.set()
        if log.isEnabledFor(logging.DEBUG):
            log.debug("event=uplink integration=%s dev=%s status=%s message=%s index=%d", p.integration,
                      p.dev_eui, p.status, msg.uid, p.index)
        return Answer(202, {"status": p.status, "message": msg.uid, "fragment": p.index,
                            "closed": [m.uid for m in p.closed]})

    # ------------------------------------------------------------------ closing

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
            log.warning("event=open_cap dev=%s message=%s code=%s", m.dev_eui, m.uid, code)
        return ops

    async def _close_ops(self, closed: list[Message], now: float) -> list[Op]:
        """Assemble closed messages (:class:`~collector.service.aggregator.Assembler`): their
        documents or incidents, as store writes."""
        ops: list[Op] = []
        for cm in await self.assembler.run(closed):
            ops.append(op_closed(cm, now))
            self.metrics.messages.labels(cm.state, cm.close_reason or "unknown").inc()
            if cm.state == "incident":
                self.metrics.incidents.labels(cm.code or "unknown").inc()
            log.info("event=message_closed message=%s dev=%s msg_id=%d reason=%s outcome=%s fragments=%d/%s%s",
                     cm.uid, cm.dev_eui, cm.msg_id, cm.close_reason, cm.state, cm.fragments_received,
                     cm.fragments_expected, f" code={cm.code}" if cm.code else "")
        return ops

    def _after_close(self, closed: list[Message]) -> None:
        if self.delivery is not None and self.delivery.enabled:
            self.delivery.wake()

    async def flush_closes(self) -> int:
        """Assemble the messages the ingest path closed and record their outcomes
        (committed before this returns); returns how many."""
        done = 0
        async with self._close_lock:
            while self._pending_close:
                batch, self._pending_close = self._pending_close, []
                assert self.committer is not None
                try:
                    await self.committer.submit_many(await self._close_ops(batch, self.clock.now()))
                except StoreUnavailable as e:
                    # still recorded as closed in the store: the aggregator tries again
                    self._pending_close[:0] = batch
                    log.error("event=close_not_recorded count=%d error=%r", len(batch), str(e))
                    return done
                except BaseException:
                    self._pending_close[:0] = batch
                    raise
                done += len(batch)
                self._after_close(batch)
        return done

    async def expire_due(self) -> int:
        """Close the messages whose deadline has passed and record their outcomes
        (committed before this returns)."""
        async with self._expire_lock:
            now = self.clock.now()
            closed = self.reasm.expire(now)
            ops = self._retry_ops + await self._close_ops(closed, now)
            if not ops:
                return 0
            assert self.committer is not None
            try:
                await self.committer.submit_many(ops)
            except StoreUnavailable as e:
                self._retry_ops = ops
                log.error("event=close_not_recorded count=%d error=%r", len(ops), str(e))
                return 0
            self._retry_ops = []
            if closed:
                self._after_close(closed)
            return len(closed)

    async def _aggregator(self) -> None:
        while not self._stopping:
            self._agg_wake.clear()
            try:
                await self.flush_closes()
                now = self.clock.now()
                due = self.reasm.next_deadline()
                # woken by an uplink: expire only when something is due (the sweep is O(closed))
                if self._retry_ops or (due is not None and due <= now) or now >= self._next_sweep:
                    self._next_sweep = now + SWEEP_INTERVAL
                    await self.expire_due()
            except Exception:  # noqa: BLE001 - the aggregator must keep running
                log.exception("event=aggregator_error")
            self._agg_target = self.reasm.next_deadline()
            if self._retry_ops or self._pending_close:
                # the store failed: try again in a while (wall time)
                self._agg_target = None
            waiters = [self._agg_wake.wait()]
            if self._agg_target is not None:
                waiters.append(self.clock.sleep_until(self._agg_target))
            await wait_first(waiters, timeout=5.0 if self._retry_ops or self._pending_close else None)

    async def _pruner(self) -> None:
        while not self._stopping:
            await self.prune()
            await self.clock.sleep_until(self.clock.now() + self.cfg.prune_interval)

    async def prune(self) -> dict:
        assert self.committer is not None
        try:
            n = await self.committer.submit(op_prune(self.clock.now() - self.cfg.retention))
        except StoreUnavailable:
            return {}
        if n and any(n.values()):
            log.info("event=pruned %s", " ".join(f"{k}={v}" for k, v in n.items()))
        return n

    async def tick(self) -> dict:
        """Run what is due at the current clock time: close messages, deliver."""
        await self.flush_closes()
        closed = await self.expire_due()
        delivered = await self.delivery.run_due() if self.delivery is not None else 0
        return {"closed": closed, "attempts": delivered}

    # ------------------------------------------------------------------ read APIs

    async def _q(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def healthz(self, request: web.Request) -> web.Response:
        ok = (self.committer is not None and self.committer._task is not None
              and not self.committer._task.done() and not self._stopping)
        problem = await asyncio.to_thread(self.store_watch.check) if self.store_watch is not None else None
        ok = ok and problem is None
        body = {"status": "ok" if ok else "unavailable", "version": __version__,
                "now": self.clock.now(), "openMessages": len(self.reasm.open_messages()),
                "writeQueue": self.committer.depth if self.committer else None,
                "circuit": self.delivery.circuit.state(self.clock.now()) if self.delivery else None}
        if self.workers is not None:
            body["workers"] = {"configured": self.cfg.workers, "running": self.workers.alive()}
        if problem is not None:
            body["problem"] = problem
        return web.json_response(body, status=200 if ok else 503)

    async def metrics_handler(self, request: web.Request) -> web.Response:
        assert self.store is not None
        await self.flush_closes()
        counts = await self._q(self.store.counts)
        m = self.metrics
        m.open_messages.set(len(self.reasm.open_messages()))
        m.queue_depth.set(counts["documents"]["pending"])
        m.dead_letters.set(counts["documents"]["dead"])
        m.write_queue.set(self.committer.depth if self.committer else 0)
        if self.delivery:
            m.circuit_open.set(1 if self.delivery.circuit.state(self.clock.now()) == "open" else 0)
        return web.Response(body=m.render(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @staticmethod
    def _limit(request: web.Request) -> int:
        try:
            return max(1, min(1000, int(request.query.get("limit", "100"))))
        except ValueError:
            raise web.HTTPBadRequest(text=json.dumps({"error": "limit must be an integer"}),
                                     content_type="application/json") from None

    async def api_messages(self, request: web.Request) -> web.Response:
        assert self.store is not None
        device = request.query.get("device")
        state = request.query.get("state")
        if state is not None and state not in MESSAGE_STATES:
            return error(400, f"state must be one of {', '.join(MESSAGE_STATES)}, not {state!r}")
        if device is not None and not ingest._HEX16.match(device):
            return error(400, f"device must be a DevEUI (16 hex digits), not {device!r}")
        rows = await self._q(self.store.list_messages, device, state, self._limit(request))
        return web.json_response({"messages": rows})

    async def api_message(self, request: web.Request) -> web.Response:
        assert self.store is not None
        d = await self._q(self.store.get_message, request.match_info["id"])
        if d is None:
            return error(404, f"no message {request.match_info['id']!r}")
        return web.json_response(d)

    async def api_incidents(self, request: web.Request) -> web.Response:
        assert self.store is not None
        rows = await self._q(self.store.list_incidents, request.query.get("device"), self._limit(request))
        return web.json_response({"incidents": rows})

    async def api_incident(self, request: web.Request) -> web.Response:
        assert self.store is not None
        d = await self._q(self.store.get_incident, request.match_info["id"])
        if d is None:
            return error(404, f"no incident {request.match_info['id']!r}")
        return web.json_response(d)

    async def api_deadletters(self, request: web.Request) -> web.Response:
        assert self.store is not None
        rows = await self._q(self.store.list_documents, "dead", self._limit(request))
        return web.json_response({"deadletters": rows})

    async def api_deadletter(self, request: web.Request) -> web.Response:
        assert self.store is not None
        d = await self._q(self.store.get_document, request.match_info["id"])
        if d is None or d["state"] != "dead":
            return error(404, f"no dead letter {request.match_info['id']!r}")
        return web.json_response(d)

    async def _retry(self, uids: list[str] | None) -> int:
        assert self.committer is not None
        try:
            n = await self.committer.submit(op_retry_dead(uids, self.clock.now()))
        except StoreUnavailable as e:
            raise web.HTTPServiceUnavailable(text=json.dumps({"error": str(e)}),
                                             content_type="application/json") from None
        if n and self.delivery:
            self.delivery.wake()
        return n

    async def api_retry(self, request: web.Request) -> web.Response:
        uid = request.match_info["id"]
        n = await self._retry([uid])
        if not n:
            return error(404, f"no dead letter {uid!r}")
        return web.json_response({"retried": [uid]}, status=202)

    async def api_retry_all(self, request: web.Request) -> web.Response:
        n = await self._retry(None)
        return web.json_response({"retried": n}, status=202)

    async def api_status(self, request: web.Request) -> web.Response:
        assert self.store is not None
        counts = await self._q(self.store.counts)
        counts["now"] = self.clock.now()
        counts["circuit"] = self.delivery.circuit.state(self.clock.now()) if self.delivery else None
        return web.json_response(counts)

    async def admin_clock(self, request: web.Request) -> web.Response:
        """Virtual time: ``{"now": <unix s>}`` or ``{"advance": <s>}`` moves the manual
        clock, then runs the closing and delivery due up to then."""
        if not isinstance(self.clock, ManualClock):
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
        try:
            if keys[0] == "now":
                self.clock.set(float(v))
            elif keys[0] == "advance":
                self.clock.advance(float(v))
            else:  # the wall clock alone steps (either way); deadlines and retries must not notice
                self.clock.step_wall(float(v))
        except ValueError as e:
            return error(400, str(e))
        ran = await self.tick()
        return web.json_response({"now": self.clock.now(), "wall": self.clock.wall(), **ran})


# --------------------------------------------------------------------------- running


async def run_service(cfg: ServiceConfig, clock: Clock | None = None,
                      ready: Callable[[int], None] | None = None) -> None:
    """Serve until SIGTERM or SIGINT, then shut down gracefully. With ``cfg.workers``
    HTTP worker processes take the connections (:mod:`collector.service.workers`)."""
    # A SIGTERM from now on stops the service gracefully - also one that comes while
    # it is still starting (its HTTP workers may be answering already).
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await _serve(cfg, clock, ready, stop)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)


async def _serve(cfg: ServiceConfig, clock: Clock | None, ready: Callable[[int], None] | None,
                 stop: asyncio.Event) -> None:
    svc = CollectorService(cfg, clock)
    runner = web.AppRunner(svc.app(), access_log=None, shutdown_timeout=cfg.shutdown_timeout,
                           keepalive_timeout=cfg.read_timeout)
    await runner.setup()
    private = channel = None
    try:
        if cfg.workers:
            private = PrivateDir()
            await web.UnixSite(runner, private / "api.sock").start()
            chan = ChannelServer(svc)
            channel = await asyncio.start_unix_server(chan.handle, private / "ingest.sock")
            port = await reserve_port(cfg.host, cfg.port)
            svc.workers = WorkerPool(cfg, port, private / "ingest.sock", private / "api.sock")
            await svc.workers.start(chan)
        else:
            site = web.TCPSite(runner, cfg.host, cfg.port)
            await site.start()
            port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    except OSError as e:
        await _stop_all(svc, runner, channel, private)
        raise RuntimeError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
    except BaseException:
        await _stop_all(svc, runner, channel, private)
        raise
    log.info("event=listening host=%s port=%d workers=%d", cfg.host, port, cfg.workers)
    # The cyclic garbage collector: what exists after start (modules, the restored
    # state) is never garbage, and the first generation is collected every 20,000
    # allocations rather than every 700 - with a large reassembler state the
    # default thresholds cost about a tenth of the ingest path's CPU.
    gc.collect()
    gc.freeze()
    gc.set_threshold(GC_THRESHOLD, *gc.get_threshold()[1:])
    if ready:
        ready(port)
    try:
        await stop.wait()
    finally:
        log.info("event=shutting_down")
        await _stop_all(svc, runner, channel, private)


async def _stop_all(svc: CollectorService, runner: web.AppRunner, channel: asyncio.Server | None,
                    private: PrivateDir | None) -> None:
    """Workers first (they finish their requests, which this process still answers),
    then the service itself."""
    if svc.workers is not None:
        await svc.workers.stop()
    if channel is not None:
        channel.close()
    await runner.cleanup()
    if private is not None:
        private.remove()


async def start_service(cfg: ServiceConfig, clock: Clock | None = None) -> tuple[CollectorService, web.AppRunner, int]:
    """Start the service in the running event loop (tests, scenarios); returns
    ``(service, runner, port)``. Stop it with ``await runner.cleanup()``."""
    svc = CollectorService(cfg, clock)
    runner = web.AppRunner(svc.app(), access_log=None, shutdown_timeout=cfg.shutdown_timeout,
                           keepalive_timeout=cfg.read_timeout)
    await runner.setup()
    site = web.TCPSite(runner, cfg.host, cfg.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return svc, runner, port
