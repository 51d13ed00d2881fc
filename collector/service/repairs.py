"""The service's side of the v2 repair loop: per-device state, routes, the outbox.

:class:`RepairHub` lives in the process that owns the store. The ingest path
calls :meth:`RepairHub.on_uplink` for every accepted FPort-17 uplink, in the same
synchronous step that feeds the reassembler; it returns the store writes that go
into the uplink's own commit: the device's repair state, its route and, when a
command became due, the device's one pending downlink (replacing the one before).
So a poll answered 202 has its ACK or NEED durably queued; the
:class:`~collector.service.downlinks.DownlinkAgent` hands it to the network server
afterwards and retries it until it is taken, also after a restart.

Without a usable route (no downlink key on a The Things Stack webhook, no
ChirpStack API URL, no downlink URL) repair is unavailable for the device: the
collector still rebuilds from the parity that arrives, says so once in the log
(``event=repair_unavailable``) and in ``/api/devices/{eui}/repair``, and counts
it in ``collector_repair_unavailable``.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge

from collector.core.reassembly import FeedResult, Message
from collector.core.repair import DeviceRepair, describe, downlink_limit
from collector.core.timefmt import parse_ms
from collector.core.uplink import Uplink
from collector.core.wire2 import FPORT_V2, POLL, Need, decode_downlink, encode_downlink
from collector.service import outbox
from collector.service.config import ServiceConfig
from collector.service.downlinks import DownlinkAgent, unavailable
from collector.service.keys import CFG, CLOCK, COMMITTER, METRICS, STORE

log = logging.getLogger("collector.repair")


def poll_done(res: FeedResult) -> bool | None:
    """The reassembler's word on a polled message: True when it is rebuilt or closed
    (given up at its deadline), False while it is open; None when it says nothing
    (decide from the fragments counted here)."""
    ev = getattr(res, "poll", None)
    if ev is not None:
        return bool(ev.closed or ev.rebuilt)
    msg = res.message
    if msg is None:
        return None
    if not isinstance(msg, Message) or msg.closed is not None:
        return True
    return None


@dataclass
class Entered:
    """What :meth:`RepairHub.on_uplink` made of one uplink: the store writes for its
    commit; :meth:`committed` is called once that commit has finished."""

    hub: RepairHub
    dev_eui: str
    version: int
    snapshot: tuple | None
    queued: bool
    ops: list[outbox.Op]
    #: msg_ids of the device the collector asks nothing more of (the reassembler need
    #: not hold them open for repair rows); None: every one (no repair for the device)
    settled: list[int] | None = None

    def committed(self, fut: asyncio.Future) -> None:
        if self.snapshot is not None:
            self.hub._settled(self, fut)


class RepairMetrics:
    def __init__(self, r: CollectorRegistry):
        self.rebuilt = Counter("collector_records_rebuilt_with_parity",
                               "v2 messages rebuilt with at least one parity row standing in for a data chunk",
                               registry=r)
        self.polls = Counter("collector_repair_polls", "v2 polls received", registry=r)
        self.commands = Counter("collector_repair_commands", "Repair commands decided, by command (ack, need, "
                                "redundancy)", ["command"], registry=r)
        self.downlinks = Counter("collector_downlinks", "Downlink hand-overs to the network server, by outcome "
                                 "(sent, failed, rejected, expired)", ["outcome"], registry=r)
        self.unavailable = Counter("collector_repair_unavailable", "v2 uplinks of devices without a usable "
                                   "downlink route", registry=r)
        self.redundancy = Gauge("collector_device_redundancy", "Parity rows per message the collector wants "
                                "from each v2 device (the device's observed r until it is steered)",
                                ["dev_eui"], registry=r)


class RepairHub:
    def __init__(self, cfg: ServiceConfig, registry: CollectorRegistry):
        self.cfg = cfg
        self.policy = cfg.repair_policy()
        self.metrics = RepairMetrics(registry)
        self.devices: dict[str, DeviceRepair] = {}
        #: each device's downlink route (with its secret key: never logged)
        self.routes: dict[str, dict] = {}
        #: the payload of each device's pending or sent downlink
        self.pending: dict[str, bytes] = {}
        #: devices whose downlink the network server took, before the device's next uplink
        self.sent: set[str] = set()
        self._told: set[str] = set()
        #: the integration each device was last heard on (for the reason repair is unavailable)
        self.sources: dict[str, str] = {}
        #: per device: how many uplinks changed its state, and the last committed
        #: (version, snapshot) - restored when a commit fails
        self._version: dict[str, int] = {}
        self._committed: dict[str, tuple[int, tuple]] = {}
        #: the agent to wake when a downlink was queued (set by the service)
        self.agent: Any = None

    def load(self, query: Any) -> None:
        """Restore the committed state (at start)."""
        for dev, state, route in outbox.load(query):
            self.devices[dev] = d = DeviceRepair.from_dict(state)
            if route is not None:
                self.routes[dev] = route
            self._gauge(dev, d)
        for r in query("SELECT dev_eui, payload, state FROM downlinks", ()):
            self.pending[r[0]] = bytes(r[1])
            if r[2] == "sent":
                self.sent.add(r[0])

    # ------------------------------------------------------------------ ingest

    def on_uplink(self, up: Uplink, route: dict | None, res: FeedResult, now: float,
                  is_open: Callable[[int], bool] | None = None) -> Entered:
        """An FPort-17 uplink the reassembler took (accepted, a duplicate, a poll) and
        what it made of it: the store writes for the uplink's own commit, and the
        callback for when that commit has finished (:meth:`Entered.committed`).
        ``is_open(msg_id)``: whether the reassembler still has the device's message
        open (a NEED for one it closed is answered ACK instead)."""
        closed = res.closed
        done = poll_done(res)
        p = up.payload
        dev_eui = up.dev_eui
        if len(p) < 4:
            return Entered(self, dev_eui, -1, None, False, [], [])
        msg_id, index, k = p[0], p[1], p[2]
        if dev_eui not in self._committed:
            self._committed[dev_eui] = (0, self._snapshot(dev_eui))
        dev = self.devices.get(dev_eui)
        if dev is None:
            dev = self.devices[dev_eui] = DeviceRepair(dev_eui)
        ops: list[outbox.Op] = []
        self.sources[dev_eui] = up.source
        new_route = None
        if route is not None and route != self.routes.get(dev_eui):
            self.routes[dev_eui] = new_route = route
        if dev_eui in self.sent:
            # this uplink's receive windows carried the downlink the network server had
            self.sent.discard(dev_eui)
            self.pending.pop(dev_eui, None)
            dev.delivered()
            ops.append(outbox.op_delivered(dev_eui, dev.to_dict(), now))
        if index == POLL:
            self.metrics.polls.inc()
            r_before = dev.r_wanted
            ev = getattr(res, "poll", None)
            cmd = dev.poll(msg_id, k, p[3], self.policy, done, ev.held if ev is not None and ev.held else None)
            self.metrics.commands.labels("need" if isinstance(cmd, Need) else "ack").inc()
            log.info("event=poll dev=%s msg_id=%d k=%d sent=%d held=%d answer=%r loss=%.3f", dev_eui, msg_id, k,
                     p[3], dev.messages[msg_id].held, describe(cmd), dev.loss(self.policy))
            if dev.r_wanted != r_before:
                self.metrics.commands.labels("redundancy").inc()
                log.info("event=redundancy dev=%s r_from=%s r_to=%d loss=%.3f", dev_eui,
                         r_before if r_before is not None else dev.r_observed, dev.r_wanted, dev.loss(self.policy))
        else:
            if dev.fragment(msg_id, index, k, self.policy):  # an ACK evidently lost on the air
                self.metrics.commands.labels("ack").inc()
                log.info("event=ack_repeated dev=%s msg_id=%d index=%d", dev_eui, msg_id, index)
            if any(m.msg_id == msg_id and m.close_reason == "complete" and m.dev_eui == dev_eui for m in closed):
                seen = dev.messages[msg_id]
                if sum(1 for i in seen.indices if i < k) < k:
                    self.metrics.rebuilt.inc()
                if dev.rebuilt(msg_id, self.policy):
                    self.metrics.commands.labels("ack").inc()
        if index == POLL:
            self._gauge(dev_eui, dev)
        for cmd in dev.after_uplink(self.policy, is_open):  # a NEED evidently lost on the air
            if isinstance(cmd, Need):
                self.metrics.commands.labels("need").inc()
                log.info("event=need_repeated dev=%s msg_id=%d n=%d", dev_eui, cmd.msg_id, cmd.n)
            else:
                self.metrics.commands.labels("ack").inc()
                log.info("event=closed_acked dev=%s msg_id=%d (closed before its repair came: the device "
                         "forgets it)", dev_eui, cmd.msg_id)
        downlink = None
        reason = unavailable(self.cfg, self.routes.get(dev_eui), up.source)
        settled = None if reason is not None else dev.exhausted()
        if dev.has_due:
            if reason is not None:
                self.metrics.unavailable.inc()
                if dev_eui not in self._told:
                    self._told.add(dev_eui)
                    log.warning("event=repair_unavailable dev=%s integration=%s reason=%r (messages are still "
                                "rebuilt from the parity that arrives)", dev_eui, up.source, reason)
            else:
                cmds = dev.commands(downlink_limit(up.region, up.data_rate), self.policy.keep)
                payload = encode_downlink(cmds)
                if cmds and payload != self.pending.get(dev_eui):
                    self.pending[dev_eui] = payload
                    downlink = (payload, [describe(c) for c in cmds])
        snap = self._snapshot(dev_eui)
        assert snap[0] is not None
        ops.append(outbox.op_repair(dev_eui, snap[0], new_route, downlink, now))
        version = self._version[dev_eui] = self._version.get(dev_eui, 0) + 1
        return Entered(self, dev_eui, version, snap, downlink is not None, ops, settled)

    def _snapshot(self, dev_eui: str) -> tuple:
        dev = self.devices.get(dev_eui)
        return (dev.to_dict() if dev is not None else None, self.pending.get(dev_eui), dev_eui in self.sent,
                self.routes.get(dev_eui))

    def _settled(self, e: Entered, fut: asyncio.Future) -> None:
        if not fut.cancelled() and fut.exception() is None:
            if e.version > self._committed[e.dev_eui][0]:
                self._committed[e.dev_eui] = (e.version, e.snapshot)
            if e.queued and self.agent is not None:
                # not before: the agent reads the committed outbox
                self.agent.wake()
            return
        if self._version.get(e.dev_eui) != e.version:
            return  # a later uplink of the device changed the state again; its commit decides
        # the store did not take it: back to what was last committed
        state, pending, sent, route = self._committed[e.dev_eui][1]
        dev = e.dev_eui
        if state is None:
            self.devices.pop(dev, None)
        else:
            self.devices[dev] = DeviceRepair.from_dict(state)
        for table, value in ((self.pending, pending), (self.routes, route)):
            if value is None:
                table.pop(dev, None)
            else:
                table[dev] = value
        (self.sent.add if sent else self.sent.discard)(dev)
        log.warning("event=repair_state_restored dev=%s reason=%r", dev, "the uplink's commit failed")

    def _gauge(self, dev_eui: str, dev: DeviceRepair) -> None:
        r = dev.r_wanted if dev.r_wanted is not None else dev.r_observed
        if r is not None:
            self.metrics.redundancy.labels(dev_eui).set(r)

    # ------------------------------------------------------------------ the agent's side

    def handed_over(self, dev_eui: str, payload: bytes) -> dict | None:
        """The network server took ``payload``: the device's state to commit with it
        (None when a newer downlink replaced it meanwhile)."""
        dev = self.devices.get(dev_eui)
        if dev is None or self.pending.get(dev_eui) != payload:
            return None
        dev.handed_over(decode_downlink(payload))
        self.sent.add(dev_eui)
        return dev.to_dict()

    def attempted(self, dev_eui: str, outcome: str) -> None:
        self.metrics.downlinks.labels(outcome).inc()
        if outcome == "expired":
            self.pending.pop(dev_eui, None)

    # ------------------------------------------------------------------ views

    def status(self) -> dict:
        unavailable_n = sum(1 for d in self.devices
                            if unavailable(self.cfg, self.routes.get(d), self.sources.get(d)) is not None)
        rs = [d.r_wanted if d.r_wanted is not None else d.r_observed for d in self.devices.values()]
        known = [r for r in rs if r is not None]
        return {"devices": len(self.devices), "repairUnavailable": unavailable_n,
                "downlinksWaiting": len(self.pending) - len(self.sent), "downlinksAtNetworkServer": len(self.sent),
                "redundancy": {str(r): known.count(r) for r in sorted(set(known))}}

    def device(self, dev_eui: str) -> dict | None:
        dev = self.devices.get(dev_eui)
        if dev is None:
            return None
        reason = unavailable(self.cfg, self.routes.get(dev_eui), self.sources.get(dev_eui))
        return {"devEui": dev_eui, "repair": "available" if reason is None else "unavailable",
                "reason": reason, "route": outbox.public_route(self.routes.get(dev_eui)),
                **dev.summary(self.policy)}


REPAIR = web.AppKey("repair", RepairHub)


def message_view(hub: RepairHub, query: Any, d: dict) -> dict | None:
    """The repair picture of one message (``/api/messages/{id}``): the data chunks
    and parity rows held, the polls, the repair rounds and the downlinks that
    carried a command for it. None for a v1 message."""
    held: set[int] = set()
    k = None
    polls = 0
    for f in d.get("fragments", []):
        if f.get("fPort") != FPORT_V2:
            continue
        try:
            p = base64.b64decode(f.get("payload") or "")
        except ValueError:
            continue
        if len(p) < 4 or p[2] in (0, 255) or f.get("index") != p[1]:
            continue
        k = p[2]
        if p[1] == POLL:
            polls += 1
        else:
            held.add(p[1])
    if k is None:
        return None
    dev = hub.devices.get(d["devEui"])
    seen = dev.messages.get(d["msgId"]) if dev is not None else None
    if seen is not None and seen.k != k:
        seen = None
    opened = parse_ms(d["opened"]) / 1000 if d.get("opened") else None
    view = outbox.device_view(query, d["devEui"], since=opened) or {"downlinks": []}
    mine = [x for x in view["downlinks"]
            if any(c.split()[0] != "REDUNDANCY" and c.split()[1] == str(d["msgId"]) for c in x["commands"])]
    return {"wire": "v2", "k": k, "dataHeld": sorted(i for i in held if i < k),
            "parityRowsHeld": sorted(i - k for i in held if i >= k),
            "polls": max(polls, seen.polls if seen else 0), "deviceSent": seen.sent if seen else None,
            "repairRounds": seen.needs if seen else None, "acked": seen.acked if seen else None,
            "downlinks": mine}


async def device_handler(request: web.Request) -> web.Response:
    """``GET /api/devices/{eui}/repair``: the device's repair state, route (without
    its key), pending downlink and recent downlinks."""
    hub = request.app[REPAIR]
    eui = request.match_info["eui"].upper()
    d = hub.device(eui)
    if d is None:
        return web.json_response({"error": f"no v2 device {eui!r} heard"}, status=404)
    view = await asyncio.to_thread(outbox.device_view, request.app[STORE].query, eui)
    if view is not None:
        d["pending"] = view["pending"]
        d["downlinks"] = view["downlinks"]
    return web.json_response(d)


async def repair_ctx(app: web.Application) -> AsyncIterator[None]:
    """The repair hub and the downlink agent (after the store; the ingest path
    is given the hub when it is set up, after this)."""
    hub = app[REPAIR] = RepairHub(app[CFG], app[METRICS].registry)
    await asyncio.to_thread(hub.load, app[STORE].query)
    agent = hub.agent = DownlinkAgent(app[CFG], app[STORE], app[COMMITTER], app[CLOCK], hub)
    await agent.start()
    try:
        yield
    finally:
        await agent.stop()
