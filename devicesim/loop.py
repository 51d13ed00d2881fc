"""The closed loop: devices, channel, gateways, network server and collector in one
SimPy environment of virtual time, so what a device sends next can depend on the
downlinks it got, which depend on what the collector received.

- A device's frame goes on the air at its start (:class:`devicesim.air.Air`) and is
  resolved when it ends: heard by the gateways whose link budget allows it, that
  lost it to no collision and that were not transmitting meanwhile (half-duplex).
- The network server (:class:`devicesim.network.NetworkServer`) deduplicates; when
  its window closes the uplink goes to the application after the integration's
  latency, and ``read_delay_s`` later the server looks at the device's downlink queue
  for this uplink's receive windows: RX1 (``rx1_delay_s`` after the uplink, its
  channel, the region's RX1 data rate) from the best gateway that heard it and may
  transmit (free, and within its sub-band's duty cycle), else RX2 (the region's
  frequency and DR) one second later, else the downlink waits for the next uplink.
  A downlink reaches the device when its link budget allows (the same path loss and
  shadowing as uplinks) and, with ``network.downlinks.loss_p``, when its own draw
  does not take it.
- The application is either the collector's own core in-process
  (:class:`devicesim.collector_side.CoreCollector`, for fast studies) or whoever
  drives :class:`ClosedLoop` from outside: :meth:`ClosedLoop.advance` hands over the
  application deliveries due, :meth:`ClosedLoop.queue_downlink` puts what the real
  collector answered into the server's queue at a virtual time.
- v2 devices run :class:`collector.core.device.Device`; after each uplink they
  listen in RX1 and RX2 and take what came. v1 devices run the same process as in
  the staged engine, so a v1 fleet gives the same frames either way.

Reboots apply to v1 devices only. (A little over 400 lines: the server's window
choice and the device's listening are one timing story and stay in one file.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import simpy

from collector.core.device import Device as V2Device
from collector.core.device import DeviceError
from collector.core.lorawan import region as lookup_region
from collector.core.wire2 import FPORT_V2, POLL, decode_downlink, encode_message
from devicesim import rng as streams
from devicesim.air import Air, Gateways
from devicesim.channel import SNR_FLOOR, noise_floor, sensitivity
from devicesim.collector_side import CoreCollector
from devicesim.config import SimConfig, WireConfig
from devicesim.model import (
    Channels,
    Device,
    DeviceRun,
    FrameTable,
    RecordTruth,
    SimResult,
    gateway_positions,
    make_devices,
)
from devicesim.network import Delivery, Frame, NetworkServer, Reception
from devicesim.stats import Tracker

Progress = Callable[[float], None]
#: one Class A window's listening time when nothing arrives (a few symbols)
_RX2_GAP = 1.0


@dataclass(frozen=True, slots=True)
class DownlinkTx:
    """One Class A downlink a gateway transmitted."""

    #: transmission start, Unix seconds (virtual)
    time: float
    gateway: int
    dev_eui: str
    #: "rx1" or "rx2"
    window: str
    frequency_hz: int
    dr: int
    airtime_s: float
    payload: bytes
    #: the device demodulated it
    received: bool
    #: the frame (index in ``SimResult.frames``) whose receive windows it used
    uplink: int


class V2DeviceRun(DeviceRun):
    """A v2 device: records become messages of the core's device state machine; it
    transmits whatever that machine says at each opportunity the duty cycle allows,
    and listens in RX1/RX2 after each uplink."""

    def __init__(self, sim: ClosedLoop, dev: Device, wire: WireConfig):
        super().__init__(sim, dev)
        parity = 2 if wire.parity == "adaptive" else int(wire.parity)
        self.modem = V2Device(parity=parity, polls=wire.polls, rounds=wire.rounds,
                              poll_interval=wire.poll_interval_s)
        self.truth_of: dict[int, RecordTruth] = {}
        #: what the network server sent in this uplink's windows: (at, airtime, payload, received)
        self.rx: tuple[float, float, bytes, bool] | None = None

    def _submit(self, now: float) -> None:
        sim, dev = self.sim, self.dev
        data = self.make_record(now)
        try:
            # made at ``now``, taken up when the device is free: a record that fell due
            # while it transmitted or listened in RX1/RX2 reaches the modem later, and
            # the modem's clock never runs backwards
            msg_id = self.modem.submit(data, dev.size, sim.env.now)
        except DeviceError:
            sim.unsendable += 1
            return
        frags = encode_message(data, msg_id, dev.size, 0)
        truth = RecordTruth(len(sim.records), dev.index, dev.dev_eui, msg_id, self.record_seq, self.session,
                            dev.dr.index, dev.size, sim.cfg.start + now, data, frags, [None] * len(frags),
                            wire="v2")
        sim.records.append(truth)
        self.truth_of[msg_id] = truth

    def process(self, env: simpy.Environment):
        sim, modem = self.sim, self.modem
        dl = sim.cfg.network.downlinks
        times, i = self.times, 0
        while True:
            now = env.now
            while i < len(times) and times[i] <= now:
                self._submit(times[i])
                i += 1
            due = modem.next_due(now)
            t_rec = times[i] if i < len(times) else math.inf
            if due is None:
                if t_rec == math.inf:
                    return
                yield env.timeout(t_rec - now)
                continue
            t = self._start_time(max(due, self.next_tx), self.dev.size)
            if t >= sim.horizon and not sim.cfg.finish_messages:
                return
            if t > t_rec:  # a record comes first: queue it, then look again
                yield env.timeout(t_rec - now)
                continue
            if t > now:
                yield env.timeout(t - now)
            payload = modem.next_uplink(env.now)
            if payload is None:
                continue
            truth = self.truth_of.get(payload[0])
            self.rx = None
            toa = self._transmit(env.now, payload, truth, payload[1], FPORT_V2)
            # class A: listen in RX1, then in RX2; the server decided before RX1 opened
            yield env.timeout(toa + dl.rx1_delay_s + _RX2_GAP)
            if self.rx is not None:
                at, air, down, ok = self.rx
                if at + air > env.now:
                    yield env.timeout(at + air - env.now)
                if ok:
                    modem.downlink(down, env.now)
            self.next_tx = max(self.next_tx, env.now)


class ClosedLoop:
    """One run of the closed loop. ``app``: the in-process collector, or None when the
    caller plays the application (:meth:`advance` / :meth:`queue_downlink`)."""

    def __init__(self, config: SimConfig, app: CoreCollector | None = None, *, external: bool = False):
        cfg = self.cfg = config.validate()
        self.reg = lookup_region(cfg.region)
        self.horizon = cfg.hours * 3600.0
        self.gw_pos = gateway_positions(cfg)
        self.n_gw = len(self.gw_pos)
        self.chans = Channels(self.reg, tuple(cfg.devices.channels_hz) or self.reg.channels)
        self.frames = FrameTable()
        self.records: list[RecordTruth] = []
        self.unsendable = 0
        self.cut = 0
        self.loop = True
        self.env = simpy.Environment()
        self.devices = make_devices(cfg, self.gw_pos)
        self.tracker = Tracker(len(self.devices))
        self.ns = NetworkServer(cfg.network, seed=cfg.seed, gateways=self.n_gw, start=cfg.start)
        ch = cfg.channel
        self.air = Air(collisions=ch.collisions and ch.model == "physical", capture=ch.capture,
                       capture_db=ch.capture_db)
        dl = cfg.network.downlinks
        self.gateways = Gateways(self.reg, self.n_gw, duty_cycle=dl.duty_cycle)
        self.external = external
        adaptive = {d.dev_eui for d in self.devices if cfg.devices.wire_of(d.index).parity == "adaptive"}
        self.app = None if external else (app or CoreCollector(adaptive))
        self.runs: list[DeviceRun] = []
        for d in self.devices:
            w = cfg.devices.wire_of(d.index)
            run = V2DeviceRun(self, d, w) if w.wire == "v2" else DeviceRun(self, d)
            self.runs.append(run)
            self.env.process(run.process(self.env))
        self._by_eui = {d.dev_eui: d.index for d in self.devices}
        self._rssi: dict[int, list[float]] = {}
        self._pl = [d.mean_pl.tolist() for d in self.devices]
        self._heard_of: dict[int, list[bool]] = {}
        self._rx_of: dict[int, list[Reception]] = {}
        self.deliveries: list[Delivery] = []
        self._outbox: list[Delivery] = []
        #: the network server's downlink queue: one pending downlink per device
        self.queue: dict[str, bytes] = {}
        self.downlinks: list[DownlinkTx] = []
        self._dl_rng: dict[int, np.random.Generator] = {}
        self._dl_loss_rng: dict[int, np.random.Generator] = {}
        self._floor = {bw: noise_floor(bw, ch.noise_figure_db) for bw in (125_000, 250_000, 500_000)}
        self.tracker.stats.engine = "loop"

    # ------------------------------------------------------------------ the air

    def sent(self, i: int) -> None:
        """Frame ``i`` went on the air now: resolve it when it ends."""
        ft, cfg = self.frames, self.cfg
        d = self.devices[ft.device[i]]
        pl = self._pl[d.index]
        tx, sigma = cfg.devices.tx_power_dbm, cfg.channel.shadowing_db
        # the staged engine's arithmetic, in the same order, on plain floats
        rssi = [tx - p - sigma * z for p, z in zip(pl, ft.shadow[i].tolist(), strict=True)]
        self._rssi[i] = rssi
        self.air.start(i, ft.start[i], ft.airtime[i], ft.channel[i], d.dr.sf, d.dr.bw_hz, rssi)
        self.env.timeout(ft.airtime[i]).callbacks.append(lambda _e, i=i: self._end(i))

    def _end(self, i: int) -> None:
        ft, cfg = self.frames, self.cfg
        d = self.devices[ft.device[i]]
        rssi = self._rssi.pop(i)
        nf = self._floor[d.dr.bw_hz]
        snr = [p - nf for p in rssi]
        if cfg.channel.model == "physical":
            sens, floor = sensitivity(d.dr.sf, d.dr.bw_hz), SNR_FLOOR[d.dr.sf]
            audible = [p >= sens and q >= floor for p, q in zip(rssi, snr, strict=True)]
            coll = self.air.collided(i, ft.channel[i])
        else:
            audible = [not ft.lost[i]] * self.n_gw
            coll = None
        start, end = ft.start[i], ft.start[i] + ft.airtime[i]
        half = cfg.network.downlinks.half_duplex
        heard = []
        for g in range(self.n_gw):
            ok = audible[g] and not (coll and coll[g])
            if ok and half and self.gateways.deaf(g, start, end):
                ok = False
                self.tracker.stats.uplinks_deaf += 1
            heard.append(ok)
        self._heard_of[i] = heard
        any_heard = any(heard)
        collided = bool(coll) and any(audible) and not any_heard and any(a and c for a, c in zip(audible, coll,
                                                                                                  strict=True))
        self.tracker.frame(ft.dr[i], ft.airtime[i], any_heard, collided, record=ft.record[i] >= 0)
        if not cfg.network.enabled:
            return
        rx = [Reception(g, rssi[g], min(snr[g], 15.0)) for g in range(self.n_gw) if heard[g]]
        frame = Frame(d.dev_eui, ft.fcnt[i], ft.payload[i], cfg.start + end, ft.dr[i], self.reg.name,
                      self.chans.freqs[ft.channel[i]], fport=ft.fport[i], session=ft.session[i],
                      airtime_s=ft.airtime[i], tag=i)
        close = self.ns.submit(frame, rx)
        if close is not None:
            self._rx_of[i] = rx
            self.env.timeout(max(0.0, close - cfg.start - self.env.now)).callbacks.append(
                lambda _e, c=close: self._close(c))

    # ------------------------------------------------------------------ network server

    def _close(self, close: float) -> None:
        read = self.cfg.network.downlinks.read_delay_s
        for d in self.ns.pop_due(close):
            self.deliveries.append(d)
            if d.frame.fport != FPORT_V2:  # v1 needs no answer: accounted at the end
                continue
            self.env.timeout(max(0.0, d.time - self.cfg.start - self.env.now)).callbacks.append(
                lambda _e, d=d: self._deliver(d))
            if not d.duplicate:
                self.env.timeout(read).callbacks.append(lambda _e, f=d.frame: self._read(f))

    def _deliver(self, d: Delivery) -> None:
        """A v2 uplink reaches the application."""
        i = d.frame.tag
        ft = self.frames
        f = d.frame
        r = ft.record[i]
        truth = self.records[r] if r >= 0 else None
        if self.external:
            self._outbox.append(d)
            return
        assert self.app is not None
        up = d.uplink
        down, rebuilt = self.app.uplink(f.dev_eui, f.payload, up.region, self.reg.dr(ft.dr[i]).name,
                                        self.env.now)
        if rebuilt and truth is not None and truth.rebuilt_at is None:
            truth.rebuilt_at = self.cfg.start + self.env.now
        if down is not None:
            self.queue_downlink(f.dev_eui, down, self.cfg.start + self.env.now + self.cfg.network.downlinks.push_latency_s)

    def queue_downlink(self, dev_eui: str, payload: bytes, at: float) -> None:
        """The application's downlink ``payload`` for ``dev_eui`` reaches the network
        server's queue at ``at`` (Unix seconds, virtual; not before now), replacing
        any downlink still queued for the device."""
        delay = max(0.0, at - self.cfg.start - self.env.now)

        def enqueue(_e) -> None:
            self.queue[dev_eui] = payload
            self.tracker.stats.downlinks_queued += 1
            if self.app is not None:
                self.app.handed_over(dev_eui, payload)

        self.env.timeout(delay).callbacks.append(enqueue)

    def _read(self, f: Frame) -> None:
        """The server looks for a downlink to send in the windows of uplink ``f``."""
        payload = self.queue.get(f.dev_eui)
        if payload is None:
            return
        cfg, dl = self.cfg, self.cfg.network.downlinks
        i = f.tag
        dev = self.devices[self._by_eui[f.dev_eui]]
        end = f.end_time - cfg.start
        gws = sorted(self._rx_of.pop(i, ()), key=lambda r: -r.rssi)
        f1, dr1 = self.reg.rx1(f.dr, f.frequency_hz, dl.rx1_dr_offset)
        f2, dr2 = self.reg.rx2()
        f2 = dl.rx2_frequency_hz or f2
        dr2 = self.reg.downlink_dr(dl.rx2_dr) if dl.rx2_dr >= 0 else dr2
        now = self.env.now
        windows = (("rx1", end + dl.rx1_delay_s, f1, dr1), ("rx2", end + dl.rx1_delay_s + _RX2_GAP, f2, dr2))
        for window, t, freq, dr in windows:
            if t < now or len(payload) > dr.max_payload:
                continue
            toa = dr.time_on_air(len(payload), downlink=True)
            for r in gws:
                if self.gateways.can_send(r.gateway, t, toa, freq):
                    ok = self._transmit(dev, r.gateway, t, toa, freq, dr, payload)
                    self.downlinks.append(DownlinkTx(cfg.start + t, r.gateway, f.dev_eui, window, freq, dr.index,
                                                     toa, payload, ok, i))
                    del self.queue[f.dev_eui]
                    return

    def _transmit(self, dev: Device, g: int, t: float, toa: float, freq: int, dr, payload: bytes) -> bool:
        self.gateways.send(g, t, toa, freq)
        rng = self._dl_rng.get(dev.index)
        if rng is None:
            rng = self._dl_rng[dev.index] = streams.stream(self.cfg.seed, streams.DOWNLINK, dev.index)
        ch = self.cfg.channel
        u, z = float(rng.random()), float(rng.standard_normal())  # the same draws whatever the model
        if ch.model == "physical":
            p = self.cfg.network.downlinks.gateway_tx_power_dbm - float(dev.mean_pl[g]) - ch.shadowing_db * z
            ok = p >= sensitivity(dr.sf, dr.bw_hz) and p - self._floor[dr.bw_hz] >= SNR_FLOOR[dr.sf]
        elif ch.model == "bernoulli":
            ok = u >= ch.p
        else:  # the device's Gilbert-Elliott state, as its uplinks see it now
            ok = u >= (ch.loss_bad if self.runs[dev.index].bad else ch.loss_good)
        loss_p = self.cfg.network.downlinks.loss_p
        if loss_p > 0:  # its own stream: the draws above stay what they are without it
            lrng = self._dl_loss_rng.get(dev.index)
            if lrng is None:
                lrng = self._dl_loss_rng[dev.index] = streams.stream(self.cfg.seed, streams.DOWNLINK_LOSS,
                                                                      dev.index)
            ok = float(lrng.random()) >= loss_p and ok
        s = self.tracker.stats
        s.downlinks_sent += 1
        s.downlinks_received += ok
        s.downlink_airtime_s += toa
        run = self.runs[dev.index]
        if isinstance(run, V2DeviceRun):
            run.rx = (t, toa, payload, ok)
            named = {c.msg_id for c in decode_downlink(payload) if hasattr(c, "msg_id")}
            truths = [run.truth_of[m] for m in named if m in run.truth_of]
            for tr in truths:
                tr.downlinks += 1 / len(truths)
                tr.downlink_airtime_s += toa / len(truths)
        return ok

    # ------------------------------------------------------------------ driving

    def peek(self) -> float:
        """Virtual time (Unix seconds) of the next event; inf when the run is over."""
        t = self.env.peek()
        return t + self.cfg.start if t != math.inf else math.inf

    def advance(self, until: float) -> list[Delivery]:
        """Run to ``until`` (Unix seconds, virtual) and return the application
        deliveries due by then (external application only), in delivery order."""
        start = self.cfg.start
        while self.env.peek() + start <= until:  # compared as peek() says it, to the bit
            self.env.step()
        out, self._outbox = self._outbox, []
        return out

    def run(self, progress: Progress | None = None) -> SimResult:
        """Run to the end (every device idle, every delivery made) and return the result."""
        tick = progress or (lambda f: None)
        steps = 50
        for k in range(1, steps + 1):
            self.env.run(until=self.horizon * k / steps)
            tick(0.02 + 0.9 * k / steps)
        self.env.run()
        return self.result()

    def result(self) -> SimResult:
        recs = self.records
        ns = self.ns.stats if self.cfg.network.enabled else None
        self.deliveries.sort(key=lambda d: d.time)
        ft = self.frames
        for d in self.deliveries:
            i, f = d.frame.tag, d.frame
            self.tracker.delivery(f.dev_eui, f.session, f.fcnt, ft.dr[i], d.duplicate)
            r = ft.record[i]
            if r >= 0 and ft.frag[i] != POLL:
                recs[r].delivered_at.setdefault(ft.frag[i], []).append(d.time)
        stats = self.tracker.finish(records=len(recs), complete=sum(1 for r in recs if r.complete), cut=self.cut,
                                    network=ns)
        stats.rebuild_times([r.completed_at - r.created_at for r in recs if r.completed_at is not None])
        stats.devices_v2(run.modem.stats for run in self.runs if isinstance(run, V2DeviceRun))
        n = len(self.frames)
        heard = np.zeros((self.n_gw, n), dtype=bool)
        for i, h in self._heard_of.items():
            heard[:, i] = h
        return SimResult(self.cfg, self.devices, self.frames, self.deliveries, recs, stats, heard, ns,
                         self.chans.freqs, self.downlinks)


def simulate_loop(config: SimConfig, progress: Progress | None = None) -> SimResult:
    """Run ``config`` through the closed loop with the in-process collector."""
    loop = ClosedLoop(config)
    return loop.run(progress)
