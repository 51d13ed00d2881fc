"""HTTP worker processes in front of the one process that owns the state.

With ``workers = N`` (``collector serve --workers N``) the service runs as N + 1
processes:

- **N HTTP workers** accept the connections on the public port (each its own
  listening socket with ``SO_REUSEPORT``; the kernel spreads the connections). Each runs the same
  :class:`~collector.service.gate.IngestGate` as the single-process service - tokens, body
  limit, content type, read timeout, parsing - and answers what it rejects itself.
  A parsed uplink goes over a Unix socket to the owner; the worker answers the
  request with what the owner replies. Every other request (APIs, ``/healthz``,
  ``/metrics``, ``/admin``) is passed through to the owner's HTTP server on a
  second Unix socket.
- **The owner** (the process ``collector serve`` started) keeps the reassembler, the
  store, the aggregator and delivery, exactly as with ``workers = 0``. It replies
  to an uplink only after its fragment is committed, so a worker's 202 means what
  the single process's means: the uplink is durably stored.

HTTP handling and JSON parsing are most of an uplink's CPU time, and the workers
run them on the other cores; the owner is left with reassembly and the commit. The
channel carries batches: every uplink a worker parsed in one turn of its event loop
goes in one frame, and the owner answers every uplink of a frame once their commit
(usually one transaction) is done.

Failure handling. A worker that dies is started again. When the owner dies (kill
-9 included) each worker sees its channel close, answers its waiting requests 503
(nothing acknowledged: the network server may send them again; the store may hold
them, and then they are duplicates) and exits, so the port is free for the next
start. On SIGTERM the owner stops the workers first (they stop accepting and finish
their requests, which the owner still answers), then shuts itself down as usual.

Over 400 lines on purpose: the pool, the channel's framing and the worker's main
are one protocol between two processes; split, each half would be unreadable
without the other.

Frames are a 4-byte big-endian length and a JSON array: ``["hello", worker, pid]``,
``["up", [[request id, integration, uplink fields], ...]]`` and ``["stats", {...}]``
from a worker; ``["re", [[request id, status, body, headers], ...]]`` from the owner.
The sockets live in a directory only the service's user can open.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import socket
import struct
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import aiohttp
import orjson
from aiohttp import web

from collector.core.uplink import Uplink
from collector.service.config import ServiceConfig
from collector.service.downlinks import downlink_route
from collector.service.errors import JsonRunner, connection_bound, expect_json, json_errors
from collector.service.gate import INTEGRATIONS, Answer, IngestGate, error

log = logging.getLogger("collector.workers")

_LEN = struct.Struct(">I")
#: largest frame either side accepts
MAX_FRAME = 64 * 1024 * 1024
#: seconds between a worker's reports of its counters to the owner
STATS_INTERVAL = 1.0
#: seconds a new worker gets to connect to the owner
START_TIMEOUT = 30.0
#: a worker that dies is started again after 1, 2, 4, ... seconds, at most this many
RESTART_MAX = 30.0
#: seconds a worker must have run for its next restart to wait 1 s again
RESTART_RESET = 60.0
#: headers that belong to one hop of HTTP, not passed through
_HOP = frozenset(h.lower() for h in ("Connection", "Keep-Alive", "Transfer-Encoding", "Content-Length", "Upgrade",
                                     "Proxy-Authenticate", "Proxy-Authorization", "TE", "Trailer", "Host"))
#: and for a body passed on decoded (aiohttp decodes gzip and deflate on both sides)
_HOP_DECODED = _HOP | {"content-encoding"}


# --------------------------------------------------------------------------- the channel


def frame(obj: Any) -> bytes:
    data = orjson.dumps(obj)
    return _LEN.pack(len(data)) + data


async def read_frame(reader: asyncio.StreamReader) -> Any | None:
    """The next frame's value; ``None`` once the other side has closed."""
    try:
        (n,) = _LEN.unpack(await reader.readexactly(4))
        if n > MAX_FRAME:
            raise ValueError(f"a frame of {n} bytes is above the limit of {MAX_FRAME}")
        return orjson.loads(await reader.readexactly(n))
    except (asyncio.IncompleteReadError, ConnectionError):
        return None


def uplink_fields(up: Uplink) -> list:
    return [up.dev_eui, up.fport, base64.b64encode(up.payload).decode(), up.received_ms, up.fcnt, up.data_rate,
            up.region, up.frequency_hz, up.gateway, up.rssi, up.snr, up.source, up.ns_time]


def uplink_from_fields(f: list) -> Uplink:
    return Uplink(f[0], f[1], base64.b64decode(f[2]), *f[3:])


# --------------------------------------------------------------------------- owner side

_INTERNAL = error(500, "internal error (logged by the collector)")


class ChannelServer:
    """The owner's end: feeds the workers' uplinks to the service, replies after the commit.

    ``service`` is the owner's :class:`~collector.service.ingest_http.Ingest` (its ``enter`` and
    ``settle``, and its counters for the workers' reports).
    """

    def __init__(self, service: Any):
        self.service = service
        self.connected: dict[int, int] = {}  # worker -> pid
        self.hello = asyncio.Condition()
        self._tasks: set[asyncio.Task] = set()

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        worker = pid = None
        try:
            while (msg := await read_frame(reader)) is not None:
                kind = msg[0]
                if kind == "up":
                    self._uplinks(msg[1], writer)
                elif kind == "stats":
                    self.service.merge_worker_stats(msg[1])
                elif kind == "hello":
                    worker, pid = msg[1], msg[2]
                    async with self.hello:
                        self.connected[worker] = pid
                        self.hello.notify_all()
        except ValueError as e:  # a malformed frame: drop this worker's channel
            log.error("event=channel_error worker=%s error=%r", worker, str(e))
        finally:
            if worker is not None and self.connected.get(worker) == pid:
                del self.connected[worker]  # (a restarted worker of the same number has another pid)
            writer.close()

    def _uplinks(self, items: list, writer: asyncio.StreamWriter) -> None:
        svc = self.service
        entered: list[tuple[int, Any]] = []
        for rid, integration, fields, *route in items:
            try:
                # (a v2 uplink carries its downlink route as a fourth item)
                entered.append((rid, svc.enter(uplink_from_fields(fields), integration, *route)))
            except Exception:  # noqa: BLE001 - a bug must cost this request, not the worker's channel
                log.exception("event=ingest_failed integration=%s", integration)
                entered.append((rid, _INTERNAL))
        futures = [e.future for _, e in entered if not isinstance(e, Answer)]
        if not futures:
            self._reply(writer, entered)
            return
        task = asyncio.get_running_loop().create_task(self._settle(writer, entered, futures))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _settle(self, writer: asyncio.StreamWriter, entered: list, futures: list) -> None:
        await asyncio.wait(futures)
        done = []
        for rid, e in entered:
            if not isinstance(e, Answer):
                try:
                    e = self.service.settle(e)
                except Exception:  # noqa: BLE001
                    log.exception("event=ingest_failed integration=%s", e.integration)
                    e = _INTERNAL
            done.append((rid, e))
        self._reply(writer, done)

    @staticmethod
    def _reply(writer: asyncio.StreamWriter, answers: list[tuple[int, Answer]]) -> None:
        if not writer.is_closing():
            writer.write(frame(["re", [[rid, a.status, a.body, a.headers] for rid, a in answers]]))

    async def wait_for(self, n: int, timeout: float) -> None:
        async with self.hello:
            await asyncio.wait_for(self.hello.wait_for(lambda: len(self.connected) >= n), timeout)


def restart_delay(failures: int, ran_s: float) -> tuple[int, float]:
    """A worker died after running ``ran_s`` seconds, following ``failures`` deaths in
    a row: the new count, and the seconds to wait before starting it again. One that
    ran for a while starts again after a second; one that keeps dying (a port taken,
    a broken install) waits twice as long each time, up to :data:`RESTART_MAX`."""
    failures = 1 if ran_s >= RESTART_RESET else failures + 1
    return failures, min(RESTART_MAX, 2.0 ** (failures - 1))


class WorkerPool:
    """Starts the HTTP workers on the port and keeps them running."""

    def __init__(self, cfg: ServiceConfig, port: int, channel_path: str, api_path: str):
        self.cfg = cfg
        self.port = port
        self.channel_path = channel_path
        self.api_path = api_path
        self.procs: dict[int, asyncio.subprocess.Process] = {}
        self._watchers: list[asyncio.Task] = []
        self._stopping = False

    async def _spawn(self, worker: int) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "collector.service.workers", str(worker), str(self.port), self.channel_path, self.api_path,
            stdin=asyncio.subprocess.PIPE)
        assert proc.stdin is not None
        # the settings (tokens included) go over a pipe, not the command line
        proc.stdin.write(json.dumps(asdict(self.cfg)).encode())
        await proc.stdin.drain()
        proc.stdin.close()
        self.procs[worker] = proc
        log.info("event=worker_started worker=%d pid=%d", worker, proc.pid)
        return proc

    async def start(self, channel: ChannelServer) -> None:
        """Start the workers; returns once each is listening and connected to ``channel``."""
        n = self.cfg.workers
        for w in range(n):
            await self._spawn(w)
        loop = asyncio.get_running_loop()
        hello = loop.create_task(channel.wait_for(n, START_TIMEOUT))
        exits = [loop.create_task(p.wait()) for p in self.procs.values()]
        done, _ = await asyncio.wait([hello, *exits], return_when=asyncio.FIRST_COMPLETED)
        for t in [hello, *exits]:
            t.cancel()
        if hello not in done or hello.cancelled() or hello.exception() is not None:
            why = "one exited" if hello not in done else f"not all connected within {START_TIMEOUT:g} s"
            raise RuntimeError(f"the {n} HTTP workers did not start: {why} (see the log above)")
        self._watchers = [loop.create_task(self._watch(w), name=f"worker-{w}") for w in range(n)]

    async def _watch(self, worker: int) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while True:
            proc = self.procs[worker]
            started = loop.time()
            code = await proc.wait()
            if self._stopping:
                return
            failures, delay = restart_delay(failures, loop.time() - started)
            log.error("event=worker_exited worker=%d pid=%d code=%d restart_in=%g", worker, proc.pid, code, delay)
            await asyncio.sleep(delay)
            if self._stopping:
                return
            await self._spawn(worker)

    def alive(self) -> int:
        return sum(1 for p in self.procs.values() if p.returncode is None)

    async def stop(self) -> None:
        """SIGTERM every worker (they finish their requests) and wait for them."""
        self._stopping = True
        for t in self._watchers:
            t.cancel()
        for p in self.procs.values():
            if p.returncode is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs.values():
            try:
                await asyncio.wait_for(p.wait(), self.cfg.shutdown_timeout + 5)
            except TimeoutError:
                log.error("event=worker_killed pid=%d detail=%r", p.pid, "did not stop in time")
                p.kill()
                await p.wait()


async def reserve_port(host: str, port: int, retry_for: float = 5.0) -> int:
    """Check that ``host:port`` is free (a plain bind, without ``SO_REUSEPORT``: a
    second collector on the same port fails here instead of sharing the traffic)
    and return the port (the one the system chose for port 0). A port still held by
    the workers of a process that just died is retried for ``retry_for`` seconds:
    they exit once they notice."""
    deadline = time.monotonic() + retry_for
    while True:
        try:
            with socket.create_server((host, port)) as s:
                return s.getsockname()[1]
        except OSError as e:
            if e.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.1)


class PrivateDir:
    """A directory only this user can open, for the Unix sockets; removed at the end."""

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="collector-")  # mode 0700

    def __truediv__(self, name: str) -> str:
        return os.path.join(self.path, name)

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


# --------------------------------------------------------------------------- worker side


class Worker:
    """One HTTP worker: the ingest gate, the channel to the owner, and the pass-through."""

    def __init__(self, cfg: ServiceConfig, worker: int, channel_path: str, api_path: str):
        self.cfg = cfg
        self.worker = worker
        self.channel_path = channel_path
        self.api_path = api_path
        self.gate = IngestGate(cfg, self)
        self.owner_lost = asyncio.Event()
        self._writer: asyncio.StreamWriter | None = None
        self._waiting: dict[int, asyncio.Future] = {}
        self._outbox: list[list] = []
        self._next_id = 0
        self._uplinks: Counter[tuple[str, str]] = Counter()
        self._latency: dict[tuple[str, int], list[float]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._tasks: list[asyncio.Task] = []
        self.stopping = False

    # ------------------------------------------------------------------ counting (IngestStats)

    def uplink(self, integration: str, outcome: str) -> None:
        self._uplinks[(integration, outcome)] += 1

    def _answered(self, integration: str, status: int, seconds: float) -> None:
        v = self._latency.get((integration, status))
        if v is None:
            v = self._latency[(integration, status)] = []
        v.append(seconds)

    def _stats(self) -> dict | None:
        if not self._uplinks and not self._latency:
            return None
        out = {"uplinks": [[i, o, n] for (i, o), n in self._uplinks.items()],
               "requests": [[i, c, v] for (i, c), v in self._latency.items()]}
        self._uplinks.clear()
        self._latency = {}
        return out

    def _send_stats(self) -> None:
        stats = self._stats()
        if stats is not None and self._writer is not None and not self._writer.is_closing():
            self._writer.write(frame(["stats", stats]))

    # ------------------------------------------------------------------ lifecycle

    async def connect(self) -> None:
        reader, self._writer = await asyncio.open_unix_connection(self.channel_path)
        self._writer.write(frame(["hello", self.worker, os.getpid()]))
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._read(reader), name="replies"),
                       loop.create_task(self._report(), name="stats")]
        self._session = aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=self.api_path),
                                              auto_decompress=False)

    async def close(self) -> None:
        self._send_stats()
        for t in self._tasks:
            t.cancel()
        if self._writer is not None:
            with contextlib.suppress(OSError):
                await self._writer.drain()
            self._writer.close()
        if self._session is not None:
            await self._session.close()

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while (msg := await read_frame(reader)) is not None:
                for rid, status, body, headers in msg[1]:
                    fut = self._waiting.pop(rid, None)
                    if fut is not None and not fut.done():
                        fut.set_result(Answer(status, body, headers))
        except ValueError as e:
            log.error("event=channel_error worker=%d error=%r", self.worker, str(e))
        # the owner is gone: nothing waiting can be acknowledged any more
        self._writer = None
        lost = error(503, "the collector is restarting", {"Retry-After": "5"})
        for fut in self._waiting.values():
            if not fut.done():
                fut.set_result(lost)
        self._waiting.clear()
        if not self.stopping:
            log.error("event=owner_lost worker=%d detail=%r", self.worker, "the owning process closed the channel")
        self.owner_lost.set()

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(STATS_INTERVAL)
            self._send_stats()

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.cfg.body_limit, middlewares=[json_errors])
        for integration, path in INTEGRATIONS.items():
            app.router.add_post(path, self._ingest_handler(integration), expect_handler=expect_json)
        app.router.add_route("*", "/{tail:.*}", self._pass_through, expect_handler=expect_json)
        return app

    def _ingest_handler(self, integration: str):
        async def handler(request: web.Request) -> web.Response:
            t0 = time.perf_counter()
            up = await self.gate.admit(request, integration)
            ans = up if isinstance(up, Answer) else await self._forward(up, integration,
                                                                       downlink_route(up, integration, request))
            self._answered(integration, ans.status, time.perf_counter() - t0)
            return ans.response()
        return handler

    def _forward(self, up: Uplink, integration: str, route: dict | None = None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._writer is None or self._writer.is_closing():
            fut.set_result(error(503, "the collector is restarting", {"Retry-After": "5"}))
            return fut
        self._next_id += 1
        rid = self._next_id
        self._waiting[rid] = fut
        if not self._outbox:
            loop.call_soon(self._flush)
        self._outbox.append([rid, integration, uplink_fields(up), route] if route else
                            [rid, integration, uplink_fields(up)])
        return fut

    def _flush(self) -> None:
        batch, self._outbox = self._outbox, []
        try:
            data = frame(["up", batch])
        except Exception:  # noqa: BLE001 - a bug must answer these requests, not leave them hanging
            log.exception("event=forward_failed worker=%d uplinks=%d", self.worker, len(batch))
            for rid, _integration, _fields in batch:
                fut = self._waiting.pop(rid, None)
                if fut is not None and not fut.done():
                    fut.set_result(_INTERNAL)
            return
        if self._writer is not None and not self._writer.is_closing():
            self._writer.write(data)

    async def _pass_through(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        # the body is passed on decoded: its Content-Encoding no longer applies
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP_DECODED}
        try:
            async with self._session.request(request.method, "http://collector" + request.path_qs, headers=headers,
                                             data=await request.read() if request.body_exists else None,
                                             allow_redirects=False) as resp:
                body = await resp.read()
                out = {k: v for k, v in resp.headers.items() if k.lower() not in _HOP_DECODED}
                return web.Response(body=body, status=resp.status, headers=out)
        except aiohttp.ClientError as e:
            return error(503, f"the collector is restarting ({e.__class__.__name__})",
                         {"Retry-After": "5"}).response()


async def serve_worker(cfg: ServiceConfig, worker: int, port: int, channel_path: str, api_path: str) -> None:
    # SIGTERM (from the owner) or SIGINT (a terminal's Ctrl-C) stops the worker
    # gracefully from here on, also while it is starting
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    w = Worker(cfg, worker, channel_path, api_path)
    runner = JsonRunner(w.app(), connection_bound(cfg.max_connections), access_log=None,
                        shutdown_timeout=cfg.shutdown_timeout, keepalive_timeout=cfg.read_timeout)
    await runner.setup()
    # each worker its own listening socket on the port (SO_REUSEPORT): the kernel
    # spreads the connections over them
    site = web.TCPSite(runner, cfg.host, port, reuse_port=True, backlog=1024)
    try:
        await site.start()
    except OSError as e:
        await runner.cleanup()
        log.error("event=cannot_listen worker=%d host=%s port=%d error=%r", worker, cfg.host, port, e.strerror or str(e))
        sys.exit(2)
    await w.connect()
    lost = loop.create_task(w.owner_lost.wait())
    await asyncio.wait([loop.create_task(stop.wait()), lost], return_when=asyncio.FIRST_COMPLETED)
    w.stopping = stop.is_set()
    await runner.cleanup()  # stop accepting, finish the requests in flight
    await w.close()


def main(argv: list[str] | None = None, read_settings: Callable[[], str] = lambda: sys.stdin.read()) -> None:
    """``python -m collector.service.workers WORKER PORT CHANNEL API`` (settings as JSON on stdin);
    started by :class:`WorkerPool`, not by hand."""
    from collector.service.logs import setup_logging

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 4:
        sys.exit("usage: python -m collector.service.workers WORKER PORT CHANNEL API (started by collector serve --workers)")
    cfg = ServiceConfig(**json.loads(read_settings()))
    setup_logging(cfg.log_level)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_worker(cfg, int(args[0]), int(args[1]), args[2], args[3]))


if __name__ == "__main__":
    main()
