"""The simulated world: devices and their state, the ground truth of every message,
the frames on the air and the device process that makes them.

A :class:`DeviceRun` is one device's SimPy process: it builds records, fragments them
and transmits under the duty cycle, appending every frame to its host's
:class:`FrameTable` and every message to its host's ground truth. The engines
(:mod:`devicesim.engine`) decide what the frames become.

(Longer than 400 lines on purpose: the device process and the state it reads are
kept with the placement and schedules that build that state.)
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import simpy

from collector.core.lorawan import DataRate, Region
from collector.core.lorawan import region as lookup_region
from collector.core.wire import FPORT, encode_record, fragment
from devicesim import rng as streams
from devicesim.channel import path_loss, sensitivity
from devicesim.config import ConfigError, SimConfig
from devicesim.dutycycle import Band
from devicesim.network import Delivery, NetworkStats
from devicesim.records import make_record
from devicesim.stats import Stats


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
    #: application delivery times of each fragment index (duplicates included; v2:
    #: parity rows too, under their index)
    delivered_at: dict[int, list[float]] = field(default_factory=dict)
    wire: str = "v1"
    #: uplinks this message took (v2: fragments, parity rows and polls) and their airtime
    uplinks: int = 0
    airtime_s: float = 0.0
    #: downlinks that named this message, and their airtime (a downlink naming several
    #: messages is shared out equally)
    downlinks: float = 0.0
    downlink_airtime_s: float = 0.0
    #: v2: when the collector side held k distinct fragments (Unix seconds)
    rebuilt_at: float | None = None

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
        """Every data fragment delivered (v1), or any k distinct fragments (v2)."""
        return len(self.delivered_at) >= self.count

    @property
    def completed_at(self) -> float | None:
        """When the application first held what rebuilds the record (Unix seconds)."""
        if self.rebuilt_at is not None:
            return self.rebuilt_at
        if not self.complete:
            return None
        firsts = sorted(min(ts) for ts in self.delivered_at.values())
        return firsts[self.count - 1]


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
        #: FPort of each frame (filled by the closed loop only; 16 otherwise)
        self.fport: list[int] = []
        self.record: list[int] = []
        self.frag: list[int] = []
        self.shadow: list[np.ndarray] = []
        self.lost: list[bool] = []

    def __len__(self) -> int:
        return len(self.start)


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
    #: frequency (Hz) of each channel index in ``frames.channel``
    channels_hz: tuple[int, ...] = ()
    #: closed loop: every downlink a gateway transmitted (``devicesim.loop.DownlinkTx``)
    downlinks: list = field(default_factory=list)

    def uplinks(self, fmt: str | None = None) -> Iterator[tuple[float, str, dict]]:
        """``(delivery time, collector path, JSON body)`` in delivery-time order."""
        f = fmt or self.config.format
        for d in self.deliveries:
            path, body = d.body(f)
            yield d.time, path, body


class Host(Protocol):
    """What a device process needs from the engine that runs it."""

    cfg: SimConfig
    horizon: float
    chans: Channels
    frames: FrameTable
    records: list[RecordTruth]
    n_gw: int
    unsendable: int
    cut: int
    #: the engine wants to hear of every frame as it starts (:meth:`sent`)
    loop: bool

    def sent(self, frame: int) -> None: ...


# --------------------------------------------------------------------------- setup


def gateway_positions(cfg: SimConfig) -> np.ndarray:
    g = cfg.gateways
    if g.positions:
        return np.asarray(g.positions, dtype=float)
    pos = [(0.0, 0.0)]
    r = cfg.devices.radius_m / 2
    for k in range(1, g.count):
        a = 2 * math.pi * (k - 1) / (g.count - 1)
        pos.append((r * math.cos(a), r * math.sin(a)))
    return np.asarray(pos, dtype=float)


def choose_dr(cfg: SimConfig, reg: Region, index: int, best_pl: float) -> DataRate:
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
        dr = choose_dr(cfg, reg, i, float(pl.min()))
        size = cfg.devices.fragment_size or dr.max_payload
        if size > dr.max_payload:
            raise ConfigError(
                f"devices.fragment_size {size} exceeds the maximum payload N={dr.max_payload} of "
                f"{reg.name} DR{dr.index}"
            )
        out.append(Device(i, streams.dev_eui(i), x, y, dr, size, pl))
    return out


class Channels:
    """A region's uplink channels and the sub-band each belongs to: ``freqs`` (the
    configured or default channels for 125/250 kHz data rates) followed by the
    region's 500 kHz channels (US915, AU915), which its 500 kHz data rates use."""

    def __init__(self, reg: Region, freqs: tuple[int, ...]):
        wide = tuple(f for f in reg.wide_channels if f not in freqs)
        self.narrow = list(range(len(freqs)))
        self.wide = list(range(len(freqs), len(freqs) + len(wide))) or self.narrow
        freqs = freqs + wide
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

    def of(self, bw_hz: int) -> list[int]:
        """The channel indices a data rate of ``bw_hz`` hops over."""
        return self.wide if bw_hz == 500_000 else self.narrow


# --------------------------------------------------------------------------- device processes


def record_times(cfg: SimConfig, index: int, horizon: float) -> tuple[list[float], int]:
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


def reboot_times(cfg: SimConfig, index: int, horizon: float) -> list[float]:
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


class DeviceRun:
    """State and SimPy process of one device."""

    def __init__(self, sim: Host, dev: Device):
        self.sim = sim
        self.dev = dev
        cfg = sim.cfg
        i = dev.index
        self.rng_rec = streams.stream(cfg.seed, streams.RECORD, i)
        self.rng_radio = streams.stream(cfg.seed, streams.RADIO, i)
        self.rng_loss = streams.stream(cfg.seed, streams.LOSS, i) if cfg.channel.model != "physical" else None
        self.times, self.hour = record_times(cfg, i, sim.horizon)
        self.reboots = reboot_times(cfg, i, sim.horizon)
        self.toa: dict[int, float] = {}
        self.msg_id = 0
        self.fcnt = 0
        self.session = 0
        self.resets = 0
        self.seq = int(self.rng_rec.integers(0, 5000))
        self.boot = -float(self.rng_rec.uniform(0, 30 * 86400))
        self.next_tx = 0.0
        self.bands = [Band(dc) for dc in sim.chans.dc]
        self.allowed = sim.chans.of(dev.dr.bw_hz)
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

    def make_record(self, now: float) -> bytes:
        """The device's next record, made at ``now`` (seconds since the start), encoded."""
        dev, cfg = self.dev, self.sim.cfg
        shape = cfg.devices.record
        interval = (86400 if cfg.devices.schedule.kind == "daily" else cfg.devices.schedule.every_min * 60)
        interval_s = max(1, min(65535, int(round(interval / shape.samples))))
        rec = make_record(
            self.rng_rec, serial=0x10000 + dev.index, seq=self.seq, end_time=cfg.start + now,
            interval_s=interval_s, shape=shape, position=(dev.x, dev.y), upload_hour=self.hour,
            dr=dev.dr.index, uptime_s=int(now - self.boot), reset_count=self.resets,
            last_rssi=cfg.devices.tx_power_dbm - float(dev.mean_pl.min()), site=f"site-{dev.index:05d}",
        )
        self.seq = (self.seq + 1) & 0xFFFF
        self.record_seq = rec.record_seq
        return encode_record(rec)

    def process(self, env: simpy.Environment):
        sim, dev, cfg = self.sim, self.dev, self.sim.cfg
        for t_rec in self.times:
            if env.now < t_rec:
                yield env.timeout(t_rec - env.now)
            self._reboot_due(env.now)
            t_abs = cfg.start + env.now
            data = self.make_record(env.now)
            try:
                frags = fragment(self.msg_id, data, dev.size)
            except ValueError:
                sim.unsendable += 1
                continue
            truth = RecordTruth(len(sim.records), dev.index, dev.dev_eui, self.msg_id, self.record_seq,
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

    def _airtime(self, length: int) -> float:
        toa = self.toa.get(length)
        if toa is None:
            toa = self.toa[length] = self.dev.dr.time_on_air(length)
        return toa

    def _start_time(self, t: float, length: int) -> float:
        """The earliest start at or after ``t`` a sub-band of the device's channels allows."""
        if not self.sim.cfg.devices.duty_cycle:
            return t
        toa = self._airtime(length)
        band = self.sim.chans.band
        return max(t, min(self.bands[b].earliest(t, toa) for b in {band[c] for c in self.allowed}))

    def _transmit(self, t: float, payload: bytes, truth: RecordTruth | None, k: int, fport: int = FPORT) -> float:
        """Put ``payload`` on the air at ``t`` (fragment ``k`` of ``truth``); returns its airtime."""
        sim, dev = self.sim, self.dev
        chans = sim.chans
        toa = self._airtime(len(payload))
        duty = sim.cfg.devices.duty_cycle
        allowed = self.allowed
        if duty and chans.n_bands > 1:
            is_open = {b: self.bands[b].is_open(t, toa) for b in {chans.band[c] for c in allowed}}
            free = [c for c in allowed if is_open[chans.band[c]]] or allowed
        elif duty:  # one sub-band: open, or none is and any channel will do
            free = allowed
        else:
            free = allowed
        c = free[int(self.rng_radio.random() * len(free))]
        if duty:
            self.bands[chans.band[c]].add(t, toa)
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
            if k < len(truth.sent_at) and truth.sent_at[k] is None:
                truth.sent_at[k] = sim.cfg.start + t
            truth.uplinks += 1
            truth.airtime_s += toa
        self.fcnt += 1
        if sim.loop:
            ft.fport.append(fport)
            sim.sent(len(ft) - 1)
        return toa

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
