"""Run the collector (and the stand-in Web App) on loopback from synchronous code.

:class:`LiveService` starts both on a background event-loop thread with free ports,
a real SQLite file, and by default the manual clock, and offers blocking HTTP
helpers. The tests and the scenarios drive the service through it exactly as a
network server would, over real HTTP.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from aiohttp import web

from collector.service.app import start_service
from collector.service.clock import ManualClock
from collector.service.config import ServiceConfig
from collector.testing.http import HTTPResult, http  # noqa: F401 (re-exported)
from collector.testing.webapp_stub import Faults, StubConfig, WebAppStub, start_stub

INGEST_TOKEN = "ingest-secret"
#: the read API's and /admin's token (ingest tokens do not open them)
API_TOKEN = "api-secret"
WEBAPP_TOKEN = "webapp-secret"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(cond: Callable[[], Any], timeout: float = 30.0, what: str = "condition", step: float = 0.02) -> Any:
    """Poll ``cond`` until it is truthy (connection errors count as not yet); its value."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            v = cond()
        except OSError:
            v = None
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(step)


def collector_cmd(*args: str) -> list[str]:
    """The command line of ``collector ARGS`` run by this interpreter."""
    return [sys.executable, "-m", "collector", *args]


def start_command(args: list[str], log: Path, health: str) -> subprocess.Popen:
    """Start ``collector ARGS`` as an operator would (its output appended to ``log``,
    run in ``log``'s folder) and wait until ``health`` answers."""
    p = subprocess.Popen(collector_cmd(*args), stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=log.parent)
    wait_until(lambda: p.poll() is None and http("GET", health, timeout=2).status in (200, 404),
               what=f"collector {args[0]} to listen")
    return p


def stop_commands(procs: Iterable[subprocess.Popen], timeout: float = 15.0) -> None:
    """Stop what :func:`start_command` started, as an operator would: SIGTERM, then a
    kill for one that has not exited after ``timeout`` s."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def worker_pids(log: str | Path, worker: int | None = None) -> list[int]:
    """The pids of the HTTP workers a ``collector serve --workers`` logged starting
    (``event=worker_started``) in ``log``, oldest first; only worker ``worker``'s if given."""
    which = r"\d+" if worker is None else str(worker)
    return [int(p) for p in re.findall(rf"event=worker_started worker={which} pid=(\d+)", Path(log).read_text())]


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (a zombie not yet reaped counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with contextlib.suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] == "Z"
    return True


class LiveService:
    """The collector and (optionally) the stand-in Web App on a background loop."""

    def __init__(self, db: str | Path, *, clock_start: float | None = 1_800_000_000.0, stub: bool = True,
                 stub_faults: Faults | None = None, stub_users: dict[str, str] | None = None,
                 webapp_url: str | None = None, **settings: Any):
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="live-service", daemon=True)
        self.clock = ManualClock(clock_start) if clock_start is not None else None
        self.with_stub = stub
        self.stub_cfg = StubConfig(port=0, tokens=[WEBAPP_TOKEN], users=stub_users or {},
                                   faults=stub_faults or Faults())
        self.settings = {"port": 0, "db": str(db), "ingest_token": [INGEST_TOKEN], "api_token": [API_TOKEN],
                         "webapp_token": WEBAPP_TOKEN,
                         "clock": "manual" if clock_start is not None else "system", **settings}
        self.webapp_url = webapp_url
        #: the collector's application (its parts under the keys of :mod:`collector.service.keys`)
        self.app: web.Application | None = None
        self.stub: WebAppStub | None = None
        self._runners: list = []
        self.port = 0
        self.stub_port = 0

    # ------------------------------------------------------------------ lifecycle

    def run(self, coro) -> Any:
        """Run a coroutine on the service's loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=60)

    def start(self) -> LiveService:
        self.thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        if self.with_stub and self.stub is None:
            self.stub, runner, self.stub_port = await start_stub(self.stub_cfg)
            self._runners.append(runner)
        url = self.webapp_url if self.webapp_url is not None else (
            f"http://127.0.0.1:{self.stub_port}" if self.with_stub else "")
        cfg = ServiceConfig(**{**self.settings, "webapp_url": url})
        self.app, runner, self.port = await start_service(cfg, self.clock)
        self._service_runner = runner

    def restart_service(self) -> None:
        """Stop the collector gracefully and start it again on the same database."""
        self.stop_service()
        self.start_service()

    def stop_service(self) -> None:
        """Stop the collector gracefully (the stand-in Web App keeps running)."""
        self.run(self._service_runner.cleanup())
        self.settings["port"] = self.port

    def start_service(self) -> None:
        """Start the collector again after :meth:`stop_service`, on the same port and database."""
        self.run(self._start())

    def stop(self) -> None:
        async def _stop() -> None:
            await self._service_runner.cleanup()
            for r in self._runners:
                await r.cleanup()
        try:
            self.run(_stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()

    def __enter__(self) -> LiveService:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ HTTP

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stub_url(self) -> str:
        return f"http://127.0.0.1:{self.stub_port}"

    def auth(self, token: str = INGEST_TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}

    def _auth_for(self, path: str) -> dict[str, str]:
        """The ingest token for the ingest routes, the API token for /api and /admin."""
        return self.auth(API_TOKEN if path.startswith(("/api", "/admin")) else INGEST_TOKEN)

    def post(self, path: str, body: Any, headers: dict[str, str] | None = None) -> HTTPResult:
        return http("POST", self.url + path, body, {**self._auth_for(path), **(headers or {})})

    def get(self, path: str) -> HTTPResult:
        return http("GET", self.url + path, None, self._auth_for(path))

    def post_uplinks(self, items: Iterable[tuple[str, dict]]) -> list[HTTPResult]:
        """POST ``(path, body)`` pairs as :func:`devicesim.formats.uplink_body` makes them."""
        return [self.post(path, body) for path, body in items]

    def advance(self, seconds: float) -> dict:
        """Move the manual clock and run what became due (closing, delivery)."""
        r = self.post("/admin/clock", {"advance": seconds})
        if r.status != 200:
            raise RuntimeError(f"/admin/clock answered {r.status}: {r.body!r}")
        return r.json()

    def set_faults(self, **faults: Any) -> dict:
        r = http("POST", self.stub_url + "/stub/faults", faults)
        if r.status != 200:
            raise RuntimeError(f"/stub/faults answered {r.status}: {r.body!r}")
        return r.json()

    def stub_documents(self) -> list[dict]:
        return http("GET", self.stub_url + "/stub/documents").json()["documents"]

    def stub_requests(self) -> list[dict]:
        return http("GET", self.stub_url + "/stub/requests").json()["requests"]
