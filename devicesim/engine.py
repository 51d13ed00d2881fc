"""The staged engine: all device processes run first in one SimPy environment and emit
frames; the channel decides in one vectorised pass which gateway heard which frame; the
network-server model turns receptions into deliveries.

Devices that do not react to what the network received (uplink-only class A traffic,
static ADR) need nothing more, and this is what makes the simulator fast. Every random
draw comes from a stream owned by one component and keyed by the device (see
:mod:`devicesim.rng`).
"""

from __future__ import annotations

import gc
import math
import struct
from collections.abc import Callable

import numpy as np
import simpy

from collector.core.lorawan import off_time
from collector.core.lorawan import region as lookup_region
from devicesim import rng as streams
from devicesim.channel import SNR_FLOOR, collisions, noise_floor, sensitivity
from devicesim.config import SimConfig
from devicesim.dutycycle import hourly_spacing
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


class StagedRun:
    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.reg = lookup_region(cfg.region)
        self.horizon = cfg.hours * 3600.0
        self.gw_pos = gateway_positions(cfg)
        self.n_gw = len(self.gw_pos)
        self.chans = Channels(self.reg, tuple(cfg.devices.channels_hz) or self.reg.channels)
        self.frames = FrameTable()
        self.records: list[RecordTruth] = []
        self.unsendable = 0
        self.cut = 0
        self.loop = False

    def sent(self, frame: int) -> None:
        """Frames are resolved all at once after the devices ran."""

    def poisson(self, devices: list[Device]) -> None:
        """LoRaSim-style traffic, vectorised per device: exponential gaps, fixed payload."""
        cfg = self.cfg
        s = cfg.devices.schedule
        ft = self.frames
        network = cfg.network.enabled
        starts, devs, chans, fcnts, shadows, losses, airs, drs = [], [], [], [], [], [], [], []
        for dev in devices:
            r = streams.stream(cfg.seed, streams.SCHEDULE, dev.index)
            toa = dev.dr.time_on_air(s.payload_bytes)
            period = toa + cfg.devices.min_gap_s
            allowed = self.chans.of(dev.dr.bw_hz)
            nch = len(allowed)
            if cfg.devices.duty_cycle:
                dc = min(self.chans.dc[self.chans.band[c]] for c in allowed)
                # equal frames this far apart keep both the off-time and the budget of any hour
                period = max(period, toa + off_time(toa, dc), hourly_spacing(toa, dc))
            n = int(self.horizon / s.mean_interval_s * 1.3) + 16
            t = np.cumsum(r.exponential(s.mean_interval_s, n))
            while t[-1] < self.horizon:
                t = np.concatenate([t, t[-1] + np.cumsum(r.exponential(s.mean_interval_s, n))])
            if period > 0:  # a device cannot start before its previous frame (and off-time) ended
                k = np.arange(t.size) * period
                t = k + np.maximum.accumulate(t - k)
            t = t[t < self.horizon]
            m = t.size
            rr = streams.stream(cfg.seed, streams.RADIO, dev.index)
            starts.append(t)
            devs.append(np.full(m, dev.index))
            picks = rr.integers(0, nch, m) if nch > 1 else np.zeros(m, dtype=np.int64)
            chans.append(np.asarray(allowed, dtype=np.int64)[picks])
            fcnts.append(np.arange(m))
            shadows.append(rr.standard_normal((m, self.n_gw)))
            airs.append(np.full(m, toa))
            drs.append(np.full(m, dev.dr.index))
            if cfg.channel.model != "physical":
                losses.append(self._loss_vector(dev.index, m))
        def cat(xs, dt):
            return (np.concatenate(xs) if xs else np.zeros(0, dtype=dt))
        self.arr_start = cat(starts, float)
        self.arr_device = cat(devs, np.int64)
        self.arr_channel = cat(chans, np.int64)
        self.arr_fcnt = cat(fcnts, np.int64)
        self.arr_shadow = np.concatenate(shadows).T if shadows else np.zeros((self.n_gw, 0))
        self.arr_airtime = cat(airs, float)
        self.arr_dr = cat(drs, np.int64)
        self.arr_lost = cat(losses, bool) if losses else np.zeros(self.arr_start.size, dtype=bool)
        if network:
            n = int(self.arr_start.size)
            ft.device = self.arr_device.tolist()
            ft.start = self.arr_start.tolist()
            ft.airtime = self.arr_airtime.tolist()
            ft.channel = self.arr_channel.tolist()
            ft.dr = self.arr_dr.tolist()
            ft.fcnt = self.arr_fcnt.tolist()
            ft.session = [0] * n
            pad = max(0, s.payload_bytes - 6)
            ft.payload = [(struct.pack(">IH", d, f & 0xFFFF) + bytes(pad))[: s.payload_bytes]
                          for d, f in zip(ft.device, ft.fcnt, strict=True)]
            ft.record = [-1] * n
            ft.frag = [0] * n

    def _loss_vector(self, index: int, m: int) -> np.ndarray:
        ch = self.cfg.channel
        r = streams.stream(self.cfg.seed, streams.LOSS, index)
        if ch.model == "bernoulli":
            return r.random(m) < ch.p
        u = r.random((m, 2))
        out = np.zeros(m, dtype=bool)
        bad = False
        for k in range(m):
            bad = (not u[k, 0] < ch.p_bg) if bad else bool(u[k, 0] < ch.p_gb)
            out[k] = u[k, 1] < (ch.loss_bad if bad else ch.loss_good)
        return out

    def arrays_from_table(self) -> None:
        ft = self.frames
        self.arr_start = np.asarray(ft.start, dtype=float)
        self.arr_device = np.asarray(ft.device, dtype=np.int64)
        self.arr_channel = np.asarray(ft.channel, dtype=np.int64)
        self.arr_airtime = np.asarray(ft.airtime, dtype=float)
        self.arr_dr = np.asarray(ft.dr, dtype=np.int64)
        self.arr_fcnt = np.asarray(ft.fcnt, dtype=np.int64)
        self.arr_shadow = np.asarray(ft.shadow, dtype=float).reshape(-1, self.n_gw).T
        self.arr_lost = np.asarray(ft.lost, dtype=bool)

    def radio(self, devices: list[Device]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Received power, SNR, heard mask and audible mask (gateways x frames); a frame
        audible at a gateway but not heard there was lost to a collision."""
        cfg, ch = self.cfg, self.cfg.channel
        n = self.arr_start.size
        mean_pl = np.asarray([d.mean_pl for d in devices]).reshape(len(devices), self.n_gw)
        drs = self.reg.data_rates
        sf_of = np.zeros(16, dtype=np.int64)
        bw_of = np.zeros(16, dtype=np.int64)
        for d in drs:
            sf_of[d.index], bw_of[d.index] = d.sf, d.bw_hz
        sf, bw = sf_of[self.arr_dr], bw_of[self.arr_dr]
        rssi = cfg.devices.tx_power_dbm - mean_pl[self.arr_device].T - ch.shadowing_db * self.arr_shadow
        nf = np.where(bw == 125_000, noise_floor(125_000, ch.noise_figure_db),
                      np.where(bw == 250_000, noise_floor(250_000, ch.noise_figure_db),
                               noise_floor(500_000, ch.noise_figure_db)))
        snr = rssi - nf
        coll = np.zeros((self.n_gw, n), dtype=bool)
        if ch.model == "physical":
            sens = np.asarray([sensitivity(int(a), int(b)) if a else 0.0 for a, b in zip(sf_of, bw_of, strict=True)])
            floor = np.asarray([SNR_FLOOR.get(int(a), 0.0) for a in sf_of])
            audible = (rssi >= sens[self.arr_dr]) & (snr >= floor[self.arr_dr])
            if ch.collisions and n:
                coll = collisions(self.arr_start, self.arr_airtime, self.arr_channel, sf, bw, rssi,
                                  capture=ch.capture, capture_db=ch.capture_db)
            heard = audible & ~coll
        else:
            audible = np.ones((self.n_gw, n), dtype=bool)
            heard = np.broadcast_to(~self.arr_lost, (self.n_gw, n)).copy()
        return rssi, snr, heard, audible


def simulate(config: SimConfig, *, progress: Progress | None = None) -> SimResult:
    """Run ``config`` in virtual time and return deliveries, ground truth and stats.

    ``progress`` is called with the fraction done (0..1) as the run proceeds.
    """
    # the run allocates many long-lived small objects and frees almost none: cyclic
    # garbage collection passes would only rescan them
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _simulate(config, progress)
    finally:
        if enabled:
            gc.enable()


def _simulate(config: SimConfig, progress: Progress | None) -> SimResult:
    cfg = config.validate()
    sim = StagedRun(cfg)
    tick = progress or (lambda f: None)
    devices = make_devices(cfg, sim.gw_pos)
    tick(0.02)
    if cfg.devices.schedule.kind == "poisson":
        sim.poisson(devices)
    else:
        env = simpy.Environment()
        for dev in devices:
            env.process(DeviceRun(sim, dev).process(env))
        steps = 50
        for k in range(1, steps + 1):
            env.run(until=sim.horizon * k / steps)
            tick(0.02 + 0.6 * k / steps)
        env.run()  # messages still in flight at the end
        sim.arrays_from_table()
    tick(0.65)
    rssi, snr, heard, audible = sim.radio(devices)
    tick(0.75)
    tracker = Tracker(len(devices))
    n = sim.arr_start.size
    heard_any = heard.any(axis=0) if n else np.zeros(0, dtype=bool)
    collided = audible.any(axis=0) & ~heard_any if n and cfg.channel.model == "physical" else None
    tracker.frames(sim.arr_dr, sim.arr_airtime, heard_any, collided, records=bool(sim.records))
    deliveries: list[Delivery] = []
    ns_stats = None
    if cfg.network.enabled and n:
        deliveries, ns_stats = _network(sim, devices, rssi, snr, heard, tick)
        _account(sim, tracker, deliveries)
    stats = tracker.finish(records=len(sim.records), complete=sum(1 for r in sim.records if r.complete),
                           cut=sim.cut, network=ns_stats)
    tick(1.0)
    return SimResult(cfg, devices, sim.frames, deliveries, sim.records, stats, heard, ns_stats, sim.chans.freqs)


def _network(sim: StagedRun, devices, rssi, snr, heard, tick: Progress):
    cfg = sim.cfg
    ft = sim.frames
    ns = NetworkServer(cfg.network, seed=cfg.seed, gateways=sim.n_gw, start=cfg.start)
    ends = sim.arr_start + sim.arr_airtime
    order = np.argsort(ends, kind="stable")
    # plain Python values: per-frame numpy scalar access would dominate this loop
    rssi_t = rssi.T.tolist()
    snr_t = np.minimum(snr, 15.0).T.tolist()
    heard_t = heard.T.tolist()
    ends_l = (cfg.start + ends).tolist()
    freqs = sim.chans.freqs
    region = sim.reg.name
    euis = [d.dev_eui for d in devices]
    gw_range = range(sim.n_gw)
    out: list[Delivery] = []
    total = len(order)
    step = max(1, total // 20)
    for j, i in enumerate(order.tolist()):
        hi, ri, si = heard_t[i], rssi_t[i], snr_t[i]
        rec = [Reception(g, ri[g], si[g]) for g in gw_range if hi[g]]
        frame = Frame(euis[ft.device[i]], ft.fcnt[i], ft.payload[i], ends_l[i], ft.dr[i], region,
                      freqs[ft.channel[i]], session=ft.session[i], airtime_s=ft.airtime[i], tag=i)
        ns.submit(frame, rec)
        if j % step == 0:
            out.extend(ns.pop_due(frame.end_time - 3600.0))
            tick(0.75 + 0.2 * j / total)
    out.extend(ns.pop_due(math.inf))
    out.sort(key=lambda d: d.time)
    return out, ns.stats


def _account(sim: StagedRun, tracker: Tracker, deliveries: list[Delivery]) -> None:
    ft = sim.frames
    for d in deliveries:
        i = d.frame.tag
        r = ft.record[i]
        if r >= 0:
            sim.records[r].delivered_at.setdefault(ft.frag[i], []).append(d.time)
        f = d.frame
        tracker.delivery(f.dev_eui, f.session, f.fcnt, ft.dr[i], d.duplicate)
