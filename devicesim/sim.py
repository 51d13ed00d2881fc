"""The simulation: devices (SimPy processes) -> radio channel -> gateways -> network
server -> application, in virtual time.

Devices do not react to what the network received (uplink-only class A traffic,
static ADR), so the run is staged: the devices' SimPy processes produce every frame;
the channel resolves, in one vectorised pass, which gateways heard which frame; the
network-server model turns receptions into application deliveries. Every random draw
comes from a stream owned by one component and keyed by the device (see
:mod:`devicesim.rng`).
"""

from __future__ import annotations

import gc
import math
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import simpy

from collector.core.lorawan import DataRate, Region, off_time
from collector.core.lorawan import region as lookup_region
from collector.core.wire import encode_record, fragment
from devicesim import rng as streams
from devicesim.channel import SNR_FLOOR, collisions, noise_floor, path_loss, sensitivity
from devicesim.config import ConfigError, SimConfig
from devicesim.network import Delivery, Frame, NetworkServer, NetworkStats, Reception
from devicesim.records import make_record

Progress = Callable[[float], None]


@dataclass
class Device:
    index: int
    dev_eui: str
    x: float
    y: float
    dr: DataRate
    size: int
    #: mean path loss (dB) to each gateway
    mean_pl: np.ndarray


@dataclass
class RecordTruth:
    """Ground truth of one message (one record) a device started to send."""

    record_id: int
    device: int
    dev_eui: str
    msg_id: int
    record_seq: int
    session: int
    dr: int
    size: int
    created_at: float
    record: bytes
    fragments: list[bytes]
    #: transmission start time of each fragment (None: never sent, e.g. cut by a reboot)
    sent_at: list[float | None]
    #: application delivery times of each fragment index (duplicates included)
    delivered_at: dict[int, list[float]] = field(default_factory=dict)

    @property
    def count(self) -> int:
        return len(self.fragments)

    @property
    def fragments_sent(self) -> list[int]:
        return [i for i, t in enumerate(self.sent_at) if t is not None]

    @property
    def fragments_delivered(self) -> list[int]:
        return sorted(self.delivered_at)

    @property
    def complete(self) -> bool:
        return len(self.delivered_at) == self.count


class FrameTable:
    """Every frame transmitted, as parallel columns (index = frame id)."""

    def __init__(self) -> None:
        self.device: list[int] = []
        self.start: list[float] = []
        self.airtime: list[float] = []
        self.channel: list[int] = []
        self.dr: list[int] = []
        self.fcnt: list[int] = []
        self.session: list[int] = []
        self.payload: list[bytes | None] = []
        self.record: list[int] = []
        self.frag: list[int] = []
        self.shadow: list[np.ndarray] = []
        self.lost: list[bool] = []

    def __len__(self) -> int:
        return len(self.start)


@dataclass
class Stats:
    devices: int = 0
    records: int = 0
    records_complete: int = 0
    records_cut: int = 0
    uplinks_sent: int = 0
    uplinks_heard: int = 0
    uplinks_delivered: int = 0
    app_deliveries: int = 0
    duplicates: int = 0
    dropped_fcnt: int = 0
    late_copies: int = 0
    lost_collision: int = 0
    out_of_order: int = 0
    airtime_s: float = 0.0
    #: DR -> [sent, heard, delivered]
    per_dr: dict[int, list[int]] = field(default_factory=dict)

    @property
    def delivery_ratio(self) -> float:
        return self.uplinks_delivered / self.uplinks_sent if self.uplinks_sent else 0.0

    @property
    def der(self) -> float:
        """Data extraction rate: frames heard by at least one gateway / frames sent."""
        return self.uplinks_heard / self.uplinks_sent if self.uplinks_sent else 0.0

    @property
    def out_of_order_fraction(self) -> float:
        return self.out_of_order / self.uplinks_delivered if self.uplinks_delivered else 0.0

    @property
    def airtime_per_record(self) -> float:
        return self.airtime_s / self.records if self.records else 0.0

    def to_dict(self) -> dict:
        d = {k: v for k, v in vars(self).items() if k != "per_dr"}
        d["airtime_s"] = round(self.airtime_s, 6)
        d.update(
            delivery_ratio=round(self.delivery_ratio, 6),
            der=round(self.der, 6),
            out_of_order_fraction=round(self.out_of_order_fraction, 6),
            airtime_per_record_s=round(self.airtime_per_record, 6),
            per_dr={str(k): {"sent": v[0], "heard": v[1], "delivered": v[2],
                             "ratio": round(v[2] / v[0], 6) if v[0] else 0.0}
                    for k, v in sorted(self.per_dr.items())},
        )
        return d

    def table(self) -> str:
        """The closing summary as an aligned text table."""
        rows = [
            ("devices", f"{self.devices}"),
            ("records sent", f"{self.records}"),
            ("records complete at the application", f"{self.records_complete}"),
            ("records cut by reboots", f"{self.records_cut}"),
            ("uplinks sent", f"{self.uplinks_sent}"),
            ("uplinks heard by a gateway", f"{self.uplinks_heard} ({self.der:.1%})"),
            ("uplinks delivered to the application", f"{self.uplinks_delivered} ({self.delivery_ratio:.1%})"),
            ("deliveries incl. duplicates", f"{self.app_deliveries}"),
            ("duplicates", f"{self.duplicates}"),
            ("dropped by frame-counter check", f"{self.dropped_fcnt}"),
            ("lost to collisions (all gateways)", f"{self.lost_collision}"),
            ("out-of-order fraction", f"{self.out_of_order_fraction:.2%}"),
            ("airtime per record", f"{self.airtime_per_record:.3f} s"),
        ]
        for k, (sent, _heard, deliv) in sorted(self.per_dr.items()):
            rows.append((f"DR{k} delivered / sent", f"{deliv} / {sent} ({deliv / sent if sent else 0:.1%})"))
        w = max(len(a) for a, _ in rows)
        return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


@dataclass
class SimResult:
    config: SimConfig
    devices: list[Device]
    frames: FrameTable
    #: application deliveries in delivery-time order
    deliveries: list[Delivery]
    records: list[RecordTruth]
    stats: Stats
    #: (gateways, frames) bool: which gateway demodulated which frame
    heard: np.ndarray
    network: NetworkStats | None = None

    def uplinks(self, fmt: str | None = None) -> Iterator[tuple[float, str, dict]]:
        """``(delivery time, collector path, JSON body)`` in delivery-time order."""
        f = fmt or self.config.format
        for d in self.deliveries:
            path, body = d.body(f)
            yield d.time, path, body


# --------------------------------------------------------------------------- setup


def _gateway_positions(cfg: SimConfig) -> np.ndarray:
    g = cfg.gateways
    if g.positions:
        return np.asarray(g.positions, dtype=float)
    pos = [(0.0, 0.0)]
    r = cfg.devices.radius_m / 2
    for k in range(1, g.count):
        a = 2 * math.pi * (k - 1) / (g.count - 1)
        pos.append((r * math.cos(a), r * math.sin(a)))
    return np.asarray(pos, dtype=float)


def _choose_dr(cfg: SimConfig, reg: Region, index: int, best_pl: float) -> DataRate:
    pol = cfg.devices.dr
    if pol.kind == "fixed":
        return reg.dr(pol.dr)
    if pol.kind == "mix":
        w = np.asarray(pol.weights, dtype=float)
        i = int(streams.stream(cfg.seed, streams.DR_MIX, index).choice(len(w), p=w / w.sum()))
        return reg.data_rates[i]
    best = reg.data_rates[0]
    for d in reg.data_rates:
        if d.bw_hz == 125_000 and cfg.devices.tx_power_dbm - best_pl - sensitivity(d.sf, d.bw_hz) >= pol.margin_db:
            best = d if d.index > best.index else best
    return best


def make_devices(cfg: SimConfig, gw_pos: np.ndarray) -> list[Device]:
    reg = lookup_region(cfg.region)
    ch = cfg.channel
    out = []
    for i in range(cfg.devices.count):
        r = streams.stream(cfg.seed, streams.PLACEMENT, i)
        u, a = r.random(2)
        rad = cfg.devices.radius_m * math.sqrt(u)
        x, y = rad * math.cos(2 * math.pi * a), rad * math.sin(2 * math.pi * a)
        dist = np.hypot(gw_pos[:, 0] - x, gw_pos[:, 1] - y)
        pl = path_loss(dist, ch.pl_d0_db, ch.d0_m, ch.gamma)
        dr = _choose_dr(cfg, reg, i, float(pl.min()))
        size = cfg.devices.fragment_size or dr.max_payload
        if size > dr.max_payload:
            raise ConfigError(
                f"devices.fragment_size {size} exceeds the maximum payload N={dr.max_payload} of "
                f"{reg.name} DR{dr.index}"
            )
        out.append(Device(i, streams.dev_eui(i), x, y, dr, size, pl))
    return out


class _Channels:
    """A region's uplink channels and the sub-band each belongs to."""

    def __init__(self, reg: Region, freqs: tuple[int, ...]):
        self.freqs = freqs
        bands: list = []
        self.band = []
        for f in freqs:
            b = reg.sub_band(f)
            if b not in bands:
                bands.append(b)
            self.band.append(bands.index(b))
        self.dc = [b.duty_cycle for b in bands]
        self.n_bands = len(bands)


# --------------------------------------------------------------------------- device processes


def _record_times(cfg: SimConfig, index: int, horizon: float) -> tuple[list[float], int]:
    s = cfg.devices.schedule
    r = streams.stream(cfg.seed, streams.SCHEDULE, index)
    if s.kind == "daily":
        hour = s.hour if s.hour is not None else int(r.integers(0, 24))
        day0 = math.floor(cfg.start / 86400) * 86400
        days = int(math.ceil((horizon + cfg.start - day0) / 86400)) + 1
        jit = r.uniform(-1.0, 1.0, days) * s.jitter_min * 60
        times = [day0 + d * 86400 + hour * 3600 + jit[d] - cfg.start for d in range(days)]
        return sorted(t for t in times if 0 <= t < horizon), hour
    period = s.every_min * 60
    phase = r.random() * period
    n = int((horizon - phase) // period) + 1
    hour = int(r.integers(0, 24))
    times = [phase + k * period for k in range(n)]
    # firmware dithers a periodic uplink (LoRaMac-node's APP_TX_DUTYCYCLE_RND): each
    # record moves by up to +-jitter_min minutes, at most a quarter of the period;
    # jitter_min = 0 is the lockstep of a fixed phase and period
    spread = min(s.jitter_min * 60, period / 4)
    if spread > 0:
        jit = r.uniform(-1.0, 1.0, n) * spread
        times = sorted(max(0.0, t + j) for t, j in zip(times, jit, strict=True))
    return [t for t in times if t < horizon], hour


def _reboot_times(cfg: SimConfig, index: int, horizon: float) -> list[float]:
    rb = cfg.devices.reboots
    times: list[float] = []
    if rb.per_day > 0:
        r = streams.stream(cfg.seed, streams.REBOOT, index)
        t = 0.0
        mean = 86400.0 / rb.per_day
        while True:
            t += float(r.exponential(mean))
            if t >= horizon:
                break
            times.append(t)
    if rb.at_s and (not rb.devices or index in rb.devices):
        times.extend(t for t in rb.at_s if 0 <= t < horizon)
    return sorted(times)


class _DeviceRun:
    """State and SimPy process of one device."""

    def __init__(self, sim: _Sim, dev: Device):
        self.sim = sim
        self.dev = dev
        cfg = sim.cfg
        i = dev.index
        self.rng_rec = streams.stream(cfg.seed, streams.RECORD, i)
        self.rng_radio = streams.stream(cfg.seed, streams.RADIO, i)
        self.rng_loss = streams.stream(cfg.seed, streams.LOSS, i) if cfg.channel.model != "physical" else None
        self.times, self.hour = _record_times(cfg, i, sim.horizon)
        self.reboots = _reboot_times(cfg, i, sim.horizon)
        self.toa: dict[int, float] = {}
        self.msg_id = 0
        self.fcnt = 0
        self.session = 0
        self.resets = 0
        self.seq = int(self.rng_rec.integers(0, 5000))
        self.boot = -float(self.rng_rec.uniform(0, 30 * 86400))
        self.next_tx = 0.0
        self.band_free = [0.0] * sim.chans.n_bands
        self.bad = False

    def _reboot_due(self, t: float) -> bool:
        """Apply every reboot at or before ``t``; True when one happened."""
        hit = False
        while self.reboots and self.reboots[0] <= t:
            rt = self.reboots.pop(0)
            self.msg_id = 0
            self.fcnt = 0
            self.session += 1
            self.resets += 1
            self.boot = rt
            self.next_tx = max(self.next_tx, rt + self.sim.cfg.devices.reboots.rejoin_s)
            hit = True
        return hit

    def process(self, env: simpy.Environment):
        sim, dev, cfg = self.sim, self.dev, self.sim.cfg
        shape = cfg.devices.record
        interval = (86400 if cfg.devices.schedule.kind == "daily" else cfg.devices.schedule.every_min * 60)
        interval_s = max(1, min(65535, int(round(interval / shape.samples))))
        for t_rec in self.times:
            if env.now < t_rec:
                yield env.timeout(t_rec - env.now)
            self._reboot_due(env.now)
            t_abs = cfg.start + env.now
            rec = make_record(
                self.rng_rec, serial=0x10000 + dev.index, seq=self.seq, end_time=t_abs, interval_s=interval_s,
                shape=shape, position=(dev.x, dev.y), upload_hour=self.hour, dr=dev.dr.index,
                uptime_s=int(env.now - self.boot), reset_count=self.resets,
                last_rssi=cfg.devices.tx_power_dbm - float(dev.mean_pl.min()), site=f"site-{dev.index:05d}",
            )
            self.seq = (self.seq + 1) & 0xFFFF
            data = encode_record(rec)
            try:
                frags = fragment(self.msg_id, data, dev.size)
            except ValueError:
                sim.unsendable += 1
                continue
            truth = RecordTruth(len(sim.records), dev.index, dev.dev_eui, self.msg_id, rec.record_seq,
                                self.session, dev.dr.index, dev.size, t_abs, data, frags, [None] * len(frags))
            sim.records.append(truth)
            self.msg_id = (self.msg_id + 1) & 0xFF
            for k, payload in enumerate(frags):
                t = self._start_time(max(env.now, self.next_tx), len(payload))
                if t >= sim.horizon and not sim.cfg.finish_messages:
                    break
                if self._reboot_due(t):
                    sim.cut += 1
                    break
                if env.now < t:
                    yield env.timeout(t - env.now)
                self._transmit(t, payload, truth, k)

    def _start_time(self, t: float, length: int) -> float:
        chans = self.sim.chans
        if not self.sim.cfg.devices.duty_cycle:
            return t
        return max(t, min(self.band_free[b] for b in chans.band))

    def _transmit(self, t: float, payload: bytes, truth: RecordTruth | None, k: int) -> None:
        sim, dev = self.sim, self.dev
        chans = sim.chans
        free = [c for c, b in enumerate(chans.band) if self.band_free[b] <= t] or list(range(len(chans.freqs)))
        c = free[int(self.rng_radio.random() * len(free))]
        toa = self.toa.get(len(payload))
        if toa is None:
            toa = self.toa[len(payload)] = dev.dr.time_on_air(len(payload))
        b = chans.band[c]
        if sim.cfg.devices.duty_cycle:
            self.band_free[b] = t + toa + off_time(toa, chans.dc[b])
        self.next_tx = t + toa + sim.cfg.devices.min_gap_s
        ft = sim.frames
        ft.device.append(dev.index)
        ft.start.append(t)
        ft.airtime.append(toa)
        ft.channel.append(c)
        ft.dr.append(dev.dr.index)
        ft.fcnt.append(self.fcnt)
        ft.session.append(self.session)
        ft.payload.append(payload)
        ft.record.append(truth.record_id if truth else -1)
        ft.frag.append(k)
        ft.shadow.append(self.rng_radio.standard_normal(sim.n_gw))
        ft.lost.append(self._loss())
        if truth is not None:
            truth.sent_at[k] = sim.cfg.start + t
        self.fcnt += 1

    def _loss(self) -> bool:
        ch = self.sim.cfg.channel
        if self.rng_loss is None:
            return False
        if ch.model == "bernoulli":
            return bool(self.rng_loss.random() < ch.p)
        u_switch, u_loss = self.rng_loss.random(2)
        if self.bad:
            self.bad = not u_switch < ch.p_bg
        else:
            self.bad = bool(u_switch < ch.p_gb)
        return bool(u_loss < (ch.loss_bad if self.bad else ch.loss_good))


class _Sim:
    def __init__(self, cfg: SimConfig):
        self.cfg = cfg
        self.reg = lookup_region(cfg.region)
        self.horizon = cfg.hours * 3600.0
        self.gw_pos = _gateway_positions(cfg)
        self.n_gw = len(self.gw_pos)
        self.chans = _Channels(self.reg, tuple(cfg.devices.channels_hz) or self.reg.channels)
        self.frames = FrameTable()
        self.records: list[RecordTruth] = []
        self.unsendable = 0
        self.cut = 0

    def poisson(self, devices: list[Device]) -> None:
        """LoRaSim-style traffic, vectorised per device: exponential gaps, fixed payload."""
        cfg = self.cfg
        s = cfg.devices.schedule
        ft = self.frames
        nch = len(self.chans.freqs)
        network = cfg.network.enabled
        starts, devs, chans, fcnts, shadows, losses, airs, drs = [], [], [], [], [], [], [], []
        for dev in devices:
            r = streams.stream(cfg.seed, streams.SCHEDULE, dev.index)
            toa = dev.dr.time_on_air(s.payload_bytes)
            period = toa + cfg.devices.min_gap_s
            if cfg.devices.duty_cycle:
                period = max(period, toa + off_time(toa, min(self.chans.dc)))
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
            chans.append(rr.integers(0, nch, m) if nch > 1 else np.zeros(m, dtype=np.int64))
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
    sim = _Sim(cfg)
    tick = progress or (lambda f: None)
    devices = make_devices(cfg, sim.gw_pos)
    tick(0.02)
    if cfg.devices.schedule.kind == "poisson":
        sim.poisson(devices)
    else:
        env = simpy.Environment()
        for dev in devices:
            env.process(_DeviceRun(sim, dev).process(env))
        steps = 50
        for k in range(1, steps + 1):
            env.run(until=sim.horizon * k / steps)
            tick(0.02 + 0.6 * k / steps)
        env.run()  # messages still in flight at the end
        sim.arrays_from_table()
    tick(0.65)
    rssi, snr, heard, audible = sim.radio(devices)
    tick(0.75)
    stats = Stats(devices=len(devices), records=len(sim.records), records_cut=sim.cut)
    n = sim.arr_start.size
    stats.uplinks_sent = int(n)
    heard_any = heard.any(axis=0) if n else np.zeros(0, dtype=bool)
    stats.uplinks_heard = int(heard_any.sum())
    if n and cfg.channel.model == "physical":
        stats.lost_collision = int((audible.any(axis=0) & ~heard_any).sum())
    stats.airtime_s = float(sim.arr_airtime.sum()) if sim.records else 0.0
    for d in np.unique(sim.arr_dr):
        m = sim.arr_dr == d
        stats.per_dr[int(d)] = [int(m.sum()), int(heard_any[m].sum()), 0]
    deliveries: list[Delivery] = []
    ns_stats = None
    if cfg.network.enabled and n:
        deliveries, ns_stats = _network(sim, devices, rssi, snr, heard, tick)
        _account(sim, stats, deliveries, ns_stats)
    tick(1.0)
    return SimResult(cfg, devices, sim.frames, deliveries, sim.records, stats, heard, ns_stats)


def _network(sim: _Sim, devices, rssi, snr, heard, tick: Progress):
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


def _account(sim: _Sim, stats: Stats, deliveries: list[Delivery], ns: NetworkStats) -> None:
    ft = sim.frames
    last: dict[str, tuple[int, int]] = {}
    for d in deliveries:
        i = d.frame.tag
        r = ft.record[i]
        if r >= 0:
            sim.records[r].delivered_at.setdefault(ft.frag[i], []).append(d.time)
        if d.duplicate:
            continue
        stats.per_dr[ft.dr[i]][2] += 1
        key = (d.frame.session, d.frame.fcnt)
        prev = last.get(d.frame.dev_eui)
        if prev is not None and key < prev:
            stats.out_of_order += 1
        else:
            last[d.frame.dev_eui] = key
    stats.uplinks_delivered = ns.accepted
    stats.app_deliveries = len(deliveries)
    stats.duplicates = ns.duplicates
    stats.dropped_fcnt = ns.dropped_fcnt
    stats.late_copies = ns.late_copies
    stats.records_complete = sum(1 for r in sim.records if r.complete)
