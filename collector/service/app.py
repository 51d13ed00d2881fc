"""The collector service: webhook ingest, durable store, aggregator and delivery.

:func:`init_app` builds the :class:`aiohttp.web.Application` that wires the sans-IO
core (:mod:`collector.core.reassembly`, :mod:`collector.core.assemble`,
:mod:`collector.service.delivery` policy) to aiohttp and SQLite:

- the ingest routes (:mod:`collector.service.ingest_http`) parse the three formats
  (:mod:`collector.core.ingest`), feed the reassembler and answer 202 only after the
  fragment and the message state are committed (group commit,
  :class:`collector.service.store.GroupCommitter`);
- the aggregator (:mod:`collector.service.loops`) closes messages at their deadlines on
  the injected clock, turns them into documents or incidents and queues documents
  durably;
- the delivery agent posts documents to the Web App;
- the read API, ``/healthz`` and ``/metrics`` (:mod:`collector.service.api`) show the
  state; ``/admin/clock`` (:mod:`collector.service.admin`) moves a manual clock.

The parts start in the order of the cleanup contexts (store, delivery agent,
assembler, closing and its loops, ingest) and stop in the reverse order, after the
requests in flight have finished. Every route is registered in :func:`setup_routes`.

``run_service`` runs it until SIGTERM/SIGINT and shuts down gracefully: stop
accepting, finish in-flight requests and their commits, stop delivery.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable

from aiohttp import web

from collector.core.reassembly import Message, Reassembler
from collector.service import admin, api
from collector.service.aggregator import Assembler
from collector.service.clock import Clock, make_clock
from collector.service.config import ServiceConfig, redact_url
from collector.service.consistency import StateGuard
from collector.service.delivery import DeliveryAgent
from collector.service.errors import JsonRunner, connection_bound, expect_json, json_errors
from collector.service.gate import INTEGRATIONS
from collector.service.ingest_http import INGEST, Ingest, ingest_handler
from collector.service.integrity import STORE_WATCH, FileWatch, open_store
from collector.service.keys import (
    API_TOKENS,
    ASSEMBLER,
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
from collector.service.logs import KeyValueFormatter, setup_logging  # noqa: F401 (re-exported)
from collector.service.loops import CLOSING, Closing
from collector.service.metrics import Metrics
from collector.service.mqtt import mqtt_ctx
from collector.service.registry import load_file
from collector.service.repairs import REPAIR, device_handler, repair_ctx
from collector.service.store import GroupCommitter, Store, op_device
from collector.service.workers import ChannelServer, PrivateDir, WorkerPool, reserve_port

log = logging.getLogger("collector.service")

#: allocations between collections of the garbage collector's first generation (``collector serve``)
GC_THRESHOLD = 20_000
#: messages closed by an acknowledged uplink, not yet assembled when the service stopped
_RESTORED_CLOSES = web.AppKey("restored_closes", list)


def init_app(cfg: ServiceConfig, clock: Clock | None = None, workers: WorkerPool | None = None) -> web.Application:
    """The service as an application; its parts start with it (``runner.setup()``)
    and stop with it (``runner.cleanup()``)."""
    cfg.validate()
    app = web.Application(client_max_size=cfg.body_limit, middlewares=[json_errors])
    app[CFG] = cfg
    app[CLOCK] = clock or make_clock(cfg.clock, cfg.clock_start)
    app[METRICS] = Metrics()
    app[REASM] = Reassembler(cfg.reassembly_settings())
    app[STOPPING] = asyncio.Event()
    # only the API's own tokens: whoever holds an ingest token (every network server)
    # must not read the data or retry dead letters (docs/operations.md, Security)
    app[API_TOKENS] = [t.encode() for t in cfg.api_token]
    if workers is not None:
        app[WORKERS] = workers
    setup_routes(app)
    app.cleanup_ctx.extend([_store_ctx, _delivery_ctx, _assembler_ctx, _closing_ctx, repair_ctx, _ingest_ctx])
    if cfg.mqtt_url:
        app.cleanup_ctx.append(mqtt_ctx)
    app.on_shutdown.append(_on_shutdown)
    return app


def setup_routes(app: web.Application) -> None:
    r = app.router
    for integration, path in INTEGRATIONS.items():
        r.add_post(path, ingest_handler(integration), expect_handler=expect_json)
    for method, path, handler in (
            ("GET", "/healthz", api.healthz),
            ("GET", "/metrics", api.metrics),
            ("GET", "/api/messages", api.guarded(api.messages)),
            ("GET", "/api/messages/{id}", api.guarded(api.message)),
            ("GET", "/api/incidents", api.guarded(api.incidents)),
            ("GET", "/api/incidents/{id}", api.guarded(api.incident)),
            ("GET", "/api/deadletters", api.guarded(api.deadletters)),
            ("GET", "/api/deadletters/{id}", api.guarded(api.deadletter)),
            ("POST", "/api/deadletters/retry", api.guarded(api.retry_all)),
            ("POST", "/api/deadletters/{id}/retry", api.guarded(api.retry)),
            ("GET", "/api/status", api.guarded(api.status)),
            ("GET", "/api/devices/{eui}/repair", api.guarded(device_handler)),
            ("POST", "/admin/clock", api.guarded(admin.clock))):
        (r.add_get if method == "GET" else r.add_post)(path, handler, expect_handler=expect_json)


# --------------------------------------------------------------------------- parts, in start order


async def _step(name: str, stop: Callable[[], Awaitable[object]]) -> None:
    """One shutdown step; a failure is logged and the shutdown goes on."""
    try:
        await stop()
    except Exception:  # noqa: BLE001
        log.exception("event=shutdown_step_failed step=%s", name)


async def _store_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg = app[CFG]
    if not cfg.any_ingest_token and cfg.mqtt_url and not cfg.allow_anonymous:
        log.info("event=http_ingest_closed detail=%r", "no ingest token: uplinks come over MQTT only")
    elif not cfg.any_ingest_token:
        if not cfg.allow_anonymous:
            raise RuntimeError("no ingest token configured: set --ingest-token (or allow_anonymous = true)")
        log.warning("event=auth_disabled detail=%r", "no ingest token configured; ingest is open to anyone")
    store = app[STORE] = await asyncio.to_thread(open_store, cfg.db)  # DatabaseUnusable: one line
    watch = app[STORE_WATCH] = FileWatch(cfg.db)
    watching = asyncio.get_running_loop().create_task(watch.run(app[STOPPING].is_set), name="store-watch")
    committer = app[COMMITTER] = GroupCommitter(store, cfg.commit_batch, cfg.max_pending_writes,
                                                on_commit=app[METRICS].committed)
    committer.start()
    try:
        now = app[CLOCK].now()
        reasm = app[REASM]
        app[_RESTORED_CLOSES] = await asyncio.to_thread(_restore, store, reasm, now, reasm.settings.recall)
        if cfg.devices_file:
            try:
                devices = load_file(cfg.devices_file)
            except ValueError as e:  # a token that cannot be sent, a bad DevEUI, ...: one line, no traceback
                raise RuntimeError(f"devices_file: {e}") from None
            await committer.submit_many([op_device(d.dev_eui, d.token, d.name, now) for d in devices])
            log.info("event=devices_imported file=%r count=%d", cfg.devices_file, len(devices))
        yield
    finally:
        watching.cancel()
        await _step("store", committer.close)
        store.close()
        log.info("event=stopped")


def _restore(store: Store, reasm: Reassembler, now: float, window: float) -> list[Message]:
    """Load the reassembler's state batch by batch (bounded memory while restoring);
    the messages closed by an acknowledged uplink but not yet assembled."""
    reasm.load([], store.next_seq())
    pending: list[Message] = []
    for batch in store.restore_batches(now, window):
        reasm.load(batch, 0)
        pending.extend(Message.from_dict(d) for d in batch if d.get("pending_close"))
    return pending


async def _delivery_ctx(app: web.Application) -> AsyncIterator[None]:
    delivery = app[DELIVERY] = DeliveryAgent(app[CFG], app[STORE], app[COMMITTER], app[CLOCK], app[METRICS])
    await delivery.start()
    try:
        yield
    finally:
        await _step("delivery", delivery.stop)


async def _assembler_ctx(app: web.Application) -> AsyncIterator[None]:
    #: assembles closed messages (in a worker process while closes come fast)
    assembler = app[ASSEMBLER] = Assembler()
    try:
        yield
    finally:
        await _step("assembler", assembler.close)


async def _closing_ctx(app: web.Application) -> AsyncIterator[None]:
    cfg, reasm = app[CFG], app[REASM]
    closing = app[CLOSING] = Closing(cfg, app[CLOCK], app[METRICS], reasm, app[COMMITTER], app[ASSEMBLER],
                                     app[DELIVERY])
    closing.pending = app[_RESTORED_CLOSES]
    try:
        log.info("event=started version=%s db=%r open_messages=%d next_seq=%d clock=%s webapp=%r policy=%s "
                 "timeout=%g", __version__, cfg.db, len(reasm.open_messages()), reasm.next_seq, cfg.clock,
                 redact_url(cfg.webapp_url) or None, cfg.deadline_policy, cfg.message_timeout)
        if not cfg.api_token:
            log.info("event=api_closed detail=%r", "no api_token configured: /api and /admin answer 401")
        elif cfg.shared_api_tokens:
            log.warning("event=api_token_shared detail=%r", "an API token is also an ingest token: "
                        "whoever sends uplinks can read the data and retry dead letters")
        if closing.pending:
            log.info("event=assembling_closed count=%d", len(closing.pending))
        await closing.flush_closes()
        # messages whose deadline passed while the service was down close now
        await closing.expire_due()
        closing.start()
        yield
    finally:
        # in-flight requests have finished (aiohttp waits for them before cleanup)
        await closing.stop()
        await _step("closing", closing.flush_closes)


async def _ingest_ctx(app: web.Application) -> AsyncIterator[None]:
    app[INGEST] = Ingest(app[CFG], app[CLOCK], app[METRICS], app[REASM], app[COMMITTER], app[CLOSING],
                         StateGuard(app))
    app[INGEST].repair = app[REPAIR]
    yield


async def _on_shutdown(app: web.Application) -> None:
    app[STOPPING].set()


# --------------------------------------------------------------------------- running


def _runner(app: web.Application) -> web.AppRunner:
    cfg = app[CFG]
    return JsonRunner(app, connection_bound(cfg.max_connections), access_log=None,
                      shutdown_timeout=cfg.shutdown_timeout, keepalive_timeout=cfg.read_timeout)


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
    # Each step registers its undoing on the stack as it succeeds, so the shutdown
    # runs in the reverse order: the HTTP workers first (they finish their requests,
    # which this process still answers), then the channel, then the service itself.
    async with contextlib.AsyncExitStack() as stack:
        private = PrivateDir() if cfg.workers else None
        if private is not None:
            stack.callback(private.remove)
        pool = WorkerPool(cfg, 0, private / "ingest.sock", private / "api.sock") if private is not None else None
        app = init_app(cfg, clock, pool)
        runner = _runner(app)
        stack.push_async_callback(runner.cleanup)
        await runner.setup()
        try:
            if pool is not None and private is not None:
                await web.UnixSite(runner, private / "api.sock").start()
                chan = ChannelServer(app[INGEST])
                channel = await asyncio.start_unix_server(chan.handle, private / "ingest.sock")
                stack.callback(channel.close)
                port = pool.port = await reserve_port(cfg.host, cfg.port)
                stack.push_async_callback(pool.stop)
                await pool.start(chan)
            else:
                await web.TCPSite(runner, cfg.host, cfg.port).start()
                port = runner.addresses[0][1]
        except OSError as e:
            raise RuntimeError(f"cannot listen on {cfg.host}:{cfg.port}: {e.strerror or e}") from None
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


async def start_service(cfg: ServiceConfig, clock: Clock | None = None) -> tuple[web.Application, web.AppRunner, int]:
    """Start the service in the running event loop (tests, scenarios); returns
    ``(app, runner, port)``. Stop it with ``await runner.cleanup()``."""
    runner = _runner(init_app(cfg, clock))
    try:
        await runner.setup()
        await web.TCPSite(runner, cfg.host, cfg.port).start()
    except BaseException:
        await runner.cleanup()  # the parts that had started stop again
        raise
    return runner.app, runner, runner.addresses[0][1]
