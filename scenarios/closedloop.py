"""v2 fleets through the real collector: the simulator's closed loop
(:class:`devicesim.loop.ClosedLoop` with ``external=True``) driven step by step in
virtual time, its application deliveries posted to the collector, and the
collector's downlinks carried back into the simulated network server.

The stand-in network server (:mod:`collector.testing.netserver_stub`) runs in the
runner's event loop on a free port, beside the stand-in Web App. The collector is
configured to reach it in the shape of the scenario's ``format``:

- ``ttn``: every uplink's webhook carries ``X-Downlink-Push`` / ``-Replace`` /
  ``-Apikey`` for its device, pointing at the stub (The Things Stack's push/replace);
- ``chirpstack``: ``chirpstack_api_url`` is the stub (ChirpStack v4's device queue);
- ``generic``: ``downlink_url`` is the stub's ``/downlink`` (the collector's own).

Each step runs the loop to its next event time; the deliveries due are posted at
their virtual time (the collector's clock set first), then the clock is "set" again
to the same time, which hands over every downlink due (``/admin/clock`` waits for
that), and whatever the stub got queued goes into the loop's network-server queue
at that virtual time plus the model's ``push_latency_s``. The loop decides whether a downlink still makes the uplink's
receive windows or waits for the device's next uplink.
"""

from __future__ import annotations

import heapq
import math
import time
from pathlib import Path
from typing import Any

from collector.core.wire2 import FPORT_V2, POLL
from collector.testing.netserver_stub import NetServerConfig, NetServerStub, start_netserver
from devicesim.loop import ClosedLoop
from devicesim.network import Delivery
from scenarios.driver import Driver, Progress
from scenarios.plan import Plan, Post, TruthRecord
from scenarios.spec import Scenario

TTS_KEY = "NNSXS.scenario-downlink"
CHIRPSTACK_TOKEN = "scenario-chirpstack"
DOWNLINK_TOKEN = "scenario-downlink"


class LoopDriver(Driver):
    """The runner's driver for fleets with v2 devices (see the module docstring)."""

    def __init__(self, sc: Scenario, workdir: Path, progress: Progress):
        self.loop = ClosedLoop(sc.sim, external=True)
        super().__init__(sc, Plan(sc.sim.start, [], [], {}), workdir, progress)
        self.netserver: NetServerStub | None = None
        self.ns_url = ""
        self._ns_runner: Any = None
        self._eui = {d.dev_eui.upper(): d.dev_eui for d in self.loop.devices}
        self._headers: dict[str, dict] = {}
        self.downlinks_fed = 0

    # ------------------------------------------------------------------ services

    async def services(self) -> dict[str, Any]:
        cfg = NetServerConfig(tts_keys=[TTS_KEY], chirpstack_tokens=[CHIRPSTACK_TOKEN],
                              downlink_tokens=[DOWNLINK_TOKEN])
        self.netserver, self._ns_runner, self.ns_url = await start_netserver(cfg)
        return {"chirpstack_api_url": self.ns_url, "chirpstack_api_token": CHIRPSTACK_TOKEN,
                "downlink_url": self.ns_url + "/downlink", "downlink_token": DOWNLINK_TOKEN}

    async def stop_services(self) -> None:
        if self._ns_runner is not None:
            await self._ns_runner.cleanup()

    # ------------------------------------------------------------------ clock and downlinks

    async def set_clock(self, t: float) -> dict:
        ans = await super().set_clock(t)
        self._feed()
        return ans

    def _feed(self) -> None:
        """Move what the collector queued at the stub into the loop's network server."""
        assert self.netserver is not None
        at = self.vnow + self.sc.sim.network.downlinks.push_latency_s
        for dev in list(self.netserver.queue):
            d = self.netserver.pop(dev)
            if d is not None:
                self.loop.queue_downlink(self._eui.get(dev, dev), d["payload"], at)
                self.downlinks_fed += 1

    def _post(self, d: Delivery) -> Post:
        ft = self.loop.frames
        i = d.frame.tag
        path, body = d.body(self.sc.sim.format)
        frag = ft.frag[i]
        record = ft.record[i] if frag != POLL else -1  # a poll carries no part of the record
        headers = None
        if self.sc.sim.format == "ttn":
            eui = d.frame.dev_eui
            headers = self._headers.get(eui)
            if headers is None:
                assert self.netserver is not None
                headers = self._headers[eui] = self.netserver.tts_headers(self.ns_url, eui, key=TTS_KEY)
        return Post(d.time, path, body, d.frame.dev_eui, record, frag, d.uplink.received_ms, headers)

    # ------------------------------------------------------------------ drive

    def _take_v1(self) -> None:
        """v1 deliveries need no answer: the loop files them without handing them
        over; post them at their delivery time all the same."""
        ds = self.loop.deliveries
        for d in ds[self._seen:]:
            if d.frame.fport != FPORT_V2:
                heapq.heappush(self._v1, (d.time, self._seen, d))
            self._seen += 1
        self._seen = len(ds)

    async def _drive(self) -> None:
        loop, events = self.loop, self._events()
        self._v1: list[tuple[float, int, Delivery]] = []
        self._seen = 0
        horizon = self.sc.sim.start + self.loop.horizon
        last_tick = 0.0
        while True:
            self._take_v1()
            t_ev = events[0][0] if events else math.inf
            t = min(loop.peek(), self._v1[0][0] if self._v1 else math.inf)
            if t == math.inf and t_ev == math.inf:
                break
            if t_ev <= t:
                await self.advance_to(t_ev)
                await self._event(events.pop(0)[2])
                continue
            due = loop.advance(t)
            self._take_v1()
            while self._v1 and self._v1[0][0] <= t:
                due.append(heapq.heappop(self._v1)[2])
            if not due:
                continue
            posts = sorted((self._post(d) for d in due), key=lambda p: p.time)
            self.plan.posts.extend(posts)
            await self.advance_to(posts[0].time)
            await self.post_batch(posts)
            await self.settle()  # hands over the downlinks these uplinks made due
            now = time.monotonic()
            if now - last_tick > 0.1:
                last_tick = now
                done = (self.vnow - self.sc.sim.start) / max(1.0, horizon - self.sc.sim.start)
                self.progress(0.1 + 0.8 * min(1.0, done), f"{len(self.plan.posts)} uplinks")
        self._truth()

    def _truth(self) -> None:
        """The ground truth of the run, once the loop is over."""
        res = self.loop.result()
        ft = res.frames
        heard_any = res.heard.any(axis=0).tolist() if len(ft) else []
        n = len(res.records)
        sent: list[set[int]] = [set() for _ in range(n)]
        heard: list[set[int]] = [set() for _ in range(n)]
        parity = [0] * n
        polls = [0] * n
        for i, (r, k) in enumerate(zip(ft.record, ft.frag, strict=True)):
            if r < 0:
                continue
            if k == POLL:
                polls[r] += 1
                continue
            sent[r].add(k)
            if heard_any[i]:
                heard[r].add(k)
            if k >= len(res.records[r].fragments):
                parity[r] += 1
        records = []
        for r in res.records:
            v2 = r.wire == "v2"
            records.append(TruthRecord(
                r.record_id, r.dev_eui, r.msg_id, r.record, r.fragments, r.size, r.created_at,
                sent=frozenset(sent[r.record_id]), heard=frozenset(heard[r.record_id]),
                delivered=frozenset(r.delivered_at), airtime_s=r.airtime_s,
                parity_sent=parity[r.record_id], polls_sent=polls[r.record_id], downlinks=round(r.downlinks),
                need=len(r.fragments) if v2 else None))
        self.plan.records = records
        self.obs.records = len(records)
        self.obs.uplinks = len(self.plan.posts)
        stats = res.stats.to_dict()
        self.plan.source = {"simulator": stats, "closed_loop": {
            "downlinks_from_collector": self.downlinks_fed,
            "netserver_requests": len(self.netserver.requests) if self.netserver else 0}}
        self.repair_rounds = int(res.stats.v2.get("needs_served", 0))
