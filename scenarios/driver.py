"""The run's machinery: the collector as a child process on a manual clock, the
stand-in Web App noting virtual times, and :class:`Driver`, which posts a plan's
uplinks in virtual time, injects faults, drains and collects what the collector and
the Web App ended up with (:mod:`scenarios.runner` is the entry point;
:mod:`scenarios.closedloop` drives v2 fleets).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from collector.testing.harness import free_port
from collector.testing.webapp_stub import StubConfig, WebAppStub
from scenarios.measure import Acked, Observed, Upload
from scenarios.plan import Plan, Post
from scenarios.spec import Scenario

INGEST_TOKEN = "scenario-ingest"
API_TOKEN = "scenario-api"
WEBAPP_TOKEN = "scenario-webapp"

#: progress(fraction 0..1, short status text)
Progress = Callable[[float, str], None]


class RunError(RuntimeError):
    """The run could not be carried out (the collector did not start, died, ...)."""


# --------------------------------------------------------------------------- the Web App


class VirtualStub(WebAppStub):
    """The stand-in Web App, noting the virtual time of every upload it answers."""

    def __init__(self, cfg: StubConfig):
        super().__init__(cfg)
        self.vnow = 0.0
        self.epoch = 1
        self.log: list[Upload] = []

    async def upload(self, request: web.Request) -> web.Response:
        resp = await super().upload(request)
        body = await request.read() if resp.status in (201, 409) else None
        self.log.append(Upload(request.headers.get("Idempotency-Key"), resp.status, self.vnow, body, self.epoch))
        return resp


# --------------------------------------------------------------------------- the collector process



def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))


class CollectorProcess:
    """``collector serve --clock manual`` as a child process."""

    def __init__(self, workdir: Path, settings: dict[str, Any]):
        # absolute: the collector runs with the work directory as its current one
        self.workdir = workdir = workdir.resolve()
        self.port = free_port()
        self.config = workdir / "collector.toml"
        self.log = workdir / "collector.log"
        s = {**settings, "port": self.port}
        self.config.write_text("".join(f"{k} = {_toml_value(v)}\n" for k, v in s.items()), encoding="utf-8")
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, session: aiohttp.ClientSession, clock_start: float) -> None:
        cmd = [sys.executable, "-m", "collector", "serve", "--config", str(self.config),
               "--clock", "manual", "--clock-start", repr(clock_start)]
        env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RunError(f"the collector exited with status {self.proc.returncode} at start:\n{self.tail()}")
            try:
                async with session.get(self.url + "/healthz") as r:
                    if r.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.05)
        raise RunError(f"the collector did not answer /healthz within 60 s:\n{self.tail()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def tail(self, n: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------- the driver


class Driver:
    def __init__(self, sc: Scenario, plan: Plan, workdir: Path, progress: Progress):
        self.sc = sc
        self.plan = plan
        self.workdir = workdir
        self.progress = progress
        self.acked: dict[int, dict[int, Acked]] = {}
        #: fragments delivered while the collector was down, by record
        self.refused: dict[int, set[int]] = {}
        self.obs = Observed(records=len(plan.records), uplinks=len(plan.posts))
        self.vnow = plan.start
        self.down = False
        self.steps = 0
        self.devices: set[str] = set()

    # ------------------------------------------------------------------ clock

    async def set_clock(self, t: float) -> dict:
        self.stub.vnow = t
        self.vnow = t
        self.steps += 1
        if self.down:
            return {}
        async with self.session.post(self.collector.url + "/admin/clock", json={"now": t}, headers=self.auth) as r:
            if r.status != 200:
                raise RunError(f"/admin/clock answered {r.status}: {await r.text()}")
            return await r.json()

    async def advance_to(self, t: float) -> None:
        """Move the clock to ``t`` in steps of at most ``max_step_s``."""
        step = self.sc.max_step_s
        while t - self.vnow > step:
            await self.set_clock(self.vnow + step)
        if t > self.vnow:
            await self.set_clock(t)

    async def settle(self) -> None:
        """Run what is due at the current time again (uploads of messages just closed)."""
        if not self.down:
            await self.set_clock(self.vnow)

    # ------------------------------------------------------------------ uplinks

    async def post_one(self, p: Post) -> bool:
        """POST one uplink; True when it closed a message."""
        self.devices.add(p.dev_eui)
        if self.down:
            self.obs.uplinks_refused += 1
            if p.record >= 0:
                self.refused.setdefault(p.record, set()).add(p.frag)
            return False
        try:
            headers = {**self.post_headers, **p.headers} if p.headers else self.post_headers
            async with self.session.post(self.collector.url + p.path, data=json.dumps(p.body),
                                         headers=headers) as r:
                if r.status != 202:
                    self.obs.ingest_errors += 1
                    if len(self.errors) < 20:
                        self.errors.append({"status": r.status, "body": (await r.text())[:300], "path": p.path})
                    return False
                ans = await r.json()
        except aiohttp.ClientError as e:
            self.obs.ingest_errors += 1
            if len(self.errors) < 20:
                self.errors.append({"status": None, "body": str(e)})
            return False
        self.obs.uplinks_acked += 1
        if p.record >= 0 and ans.get("status") in ("accepted", "duplicate"):
            self.acked.setdefault(p.record, {}).setdefault(p.frag, Acked(p.received_ms, self.vnow))
        return bool(ans.get("closed"))

    async def post_batch(self, batch: list[Post]) -> None:
        by_dev: dict[str, list[Post]] = {}
        for p in batch:
            by_dev.setdefault(p.dev_eui, []).append(p)
        if len(by_dev) == 1:
            closed = False
            for p in batch:
                closed |= await self.post_one(p)
        else:
            sem = asyncio.Semaphore(self.sc.concurrency)

            async def one_device(posts: list[Post]) -> bool:
                c = False
                async with sem:
                    for p in posts:
                        c |= await self.post_one(p)
                return c

            closed = any(await asyncio.gather(*(one_device(v) for v in by_dev.values())))
        if closed:
            await self.settle()

    # ------------------------------------------------------------------ faults

    async def kill(self) -> None:
        self.collector.kill()
        self.down = True

    async def restart(self) -> None:
        self.stub.epoch += 1
        await self.collector.start(self.session, self.vnow)
        self.down = False
        await self.settle()

    def set_outage(self, on: bool) -> None:
        self.stub.faults.outage = on

    # ------------------------------------------------------------------ run

    async def services(self) -> dict[str, Any]:
        """Start what else the run needs beside the Web App; returns collector settings."""
        return {}

    async def stop_services(self) -> None:
        pass

    async def run(self) -> tuple[Observed, dict[int, dict[int, Acked]], dict]:
        sc = self.sc
        faults = dict(sc.webapp)
        stub_cfg = StubConfig(port=0, tokens=[WEBAPP_TOKEN], seed=sc.seed)
        stub_cfg.faults.update(faults)
        self.stub = VirtualStub(stub_cfg)
        self.stub.vnow = self.vnow
        runner = web.AppRunner(self.stub.app(), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        stub_port = runner.addresses[0][1]
        settings = {
            "db": str(self.workdir / "collector.db"), "ingest_token": [INGEST_TOKEN], "api_token": [API_TOKEN],
            "webapp_url": f"http://127.0.0.1:{stub_port}", "webapp_token": WEBAPP_TOKEN,
            "seed": sc.seed, "log_level": "WARNING", **await self.services(), **sc.collector,
        }
        self.collector = CollectorProcess(self.workdir, settings)
        self.auth = {"Authorization": f"Bearer {API_TOKEN}"}  # /api and /admin
        self.post_headers = {"Authorization": f"Bearer {INGEST_TOKEN}", "Content-Type": "application/json"}
        self.errors: list[dict] = []
        conn = aiohttp.TCPConnector(limit=max(4, sc.concurrency + 4))
        timeout = aiohttp.ClientTimeout(total=120)
        try:
            async with aiohttp.ClientSession(connector=conn, timeout=timeout) as self.session:
                await self.collector.start(self.session, self.vnow)
                t0 = time.monotonic()
                await self._drive()
                t1 = time.monotonic()
                await self._drain()
                t2 = time.monotonic()
                await self._collect()
                timings = {"post_s": t1 - t0, "drain_s": t2 - t1, "collect_s": time.monotonic() - t2}
        finally:
            self.collector.stop()
            await runner.cleanup()
            await self.stop_services()
        self.obs.uploads = list(self.stub.log)
        return self.obs, self.acked, {"timings": timings, "ingest_errors": self.errors,
                                      "clock_steps": self.steps, "collector_log_tail": self.collector.tail(5)}

    def _events(self) -> list[tuple[float, int, str]]:
        start = self.plan.start
        ev: list[tuple[float, int, str]] = []
        for w in self.sc.webapp_outages:
            ev.append((start + w.start_s, 0, "outage_on"))
            ev.append((start + w.end_s, 1, "outage_off"))
        for k in self.sc.kills:
            ev.append((start + k.at_s, 2, "kill"))
            ev.append((start + k.at_s + k.down_s, 3, "restart"))
        return sorted(ev)

    async def _event(self, kind: str) -> None:
        if kind == "outage_on":
            self.set_outage(True)
        elif kind == "outage_off":
            self.set_outage(False)
        elif kind == "kill":
            await self.kill()
        elif kind == "restart":
            await self.restart()

    async def _drive(self) -> None:
        posts = self.plan.posts
        events = self._events()
        n = len(posts)
        q = self.sc.time_quantum_s
        i = 0
        last_tick = 0.0
        while i < n or events:
            t_post = posts[i].time if i < n else float("inf")
            t_ev = events[0][0] if events else float("inf")
            if t_ev <= t_post:
                await self.advance_to(t_ev)
                await self._event(events.pop(0)[2])
                continue
            await self.advance_to(t_post)
            limit = min(t_post + q, t_ev)
            j = i + 1
            while j < n and posts[j].time < limit:
                j += 1
            await self.post_batch(posts[i:j])
            i = j
            now = time.monotonic()
            if now - last_tick > 0.1:
                last_tick = now
                self.progress(0.1 + 0.8 * i / max(1, n), f"{i}/{n} uplinks")

    async def _status(self) -> dict:
        async with self.session.get(self.collector.url + "/api/status", headers=self.auth) as r:
            if r.status != 200:
                raise RunError(f"/api/status answered {r.status}")
            return await r.json()

    async def _drain(self) -> None:
        end_posts = max([p.time for p in self.plan.posts] + [self.vnow])
        last_event = max([e[0] for e in self._events()] + [self.vnow])
        horizon = max(end_posts, last_event) + self.sc.drain_hours * 3600
        step = self.sc.max_step_s
        k = 0
        while self.vnow < horizon:
            await self.advance_to(min(horizon, self.vnow + step))
            k += 1
            if k % 10 == 0 or self.vnow >= horizon:
                st = await self._status()
                if st["openMessages"] == 0 and st["documents"]["pending"] == 0:
                    break
                self.progress(0.9 + 0.08 * min(1.0, (self.vnow - end_posts) / max(1.0, horizon - end_posts)),
                              "draining")

    async def _collect(self) -> None:
        st = await self._status()
        self.obs.open_messages = st["openMessages"]
        self.obs.pending_documents = st["documents"]["pending"]
        self.obs.dead_letters = st["documents"]["dead"]

        async def incidents(device: str | None) -> list[dict]:
            q = f"?limit=1000&device={device}" if device else "?limit=1000"
            async with self.session.get(self.collector.url + "/api/incidents" + q, headers=self.auth) as r:
                if r.status != 200:
                    raise RunError(f"/api/incidents answered {r.status}")
                return (await r.json())["incidents"]

        rows = await incidents(None)
        if len(rows) >= 1000:  # more than one page: ask device by device
            sem = asyncio.Semaphore(8)

            async def dev(d: str) -> list[dict]:
                async with sem:
                    return await incidents(d)

            rows = [r for part in await asyncio.gather(*(dev(d) for d in sorted(self.devices))) for r in part]
        self.obs.incidents = [(r["devEui"], int(r["msgId"]), r["code"]) for r in rows]
