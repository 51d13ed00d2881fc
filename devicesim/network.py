"""Network-server model: gateway backhaul, deduplication, frame-counter check and the
asynchronous delivery to the application that reorders, delays and duplicates uplinks.

Sans-IO and usable on its own (the radio rig feeds it frames from an emulated module)::

    from devicesim.network import Frame, NetworkServer
    deliveries = NetworkServer.ideal().uplink(Frame("70B3D57ED0000001", 0, payload, end_time=t))
    path, body = deliveries[0].body("ttn")

With effects configured (latency, outages, duplicates) submit frames as they end with
:meth:`NetworkServer.submit` and collect what is due with :meth:`NetworkServer.pop_due`
(or :meth:`NetworkServer.drain` at the end); deliveries carry their virtual delivery
time. Each device's draws come from its own stream keyed by its EUI.
"""

from __future__ import annotations

import functools
import heapq
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from collector.core.lorawan import DataRate
from collector.core.lorawan import region as lookup_region
from collector.core.wire import FPORT
from devicesim.config import Latency, NetworkConfig, Outage
from devicesim.formats import AppUplink, GatewayRx, uplink_body
from devicesim.rng import NETWORK, eui_key, stream


@dataclass(frozen=True, slots=True)
class Frame:
    """One uplink as transmitted by a device."""

    dev_eui: str
    fcnt: int
    payload: bytes
    #: end of transmission, Unix seconds (virtual)
    end_time: float
    dr: int = 0
    region: str = "EU868"
    frequency_hz: int = 868_100_000
    fport: int = FPORT
    #: join session; a frame of a newer session (after a re-join) resets the counter check
    session: int = 0
    airtime_s: float = 0.0
    #: opaque reference carried through to the deliveries (ground truth bookkeeping)
    tag: Any = None


@dataclass(frozen=True, slots=True)
class Reception:
    """A gateway that demodulated the frame, with the link quality it measured."""

    gateway: int
    rssi: float = -80.0
    snr: float = 9.0


@dataclass(frozen=True, slots=True)
class Delivery:
    """One uplink as the application receives it, at virtual time ``time``."""

    time: float
    uplink: AppUplink
    frame: Frame
    duplicate: bool = False

    def body(self, fmt: str) -> tuple[str, dict]:
        """``(collector path, JSON body)`` in format ``fmt`` (ttn|chirpstack|generic)."""
        return uplink_body(fmt, self.uplink)


@dataclass
class NetworkStats:
    frames: int = 0
    unheard: int = 0
    late_copies: int = 0
    dropped_fcnt: int = 0
    accepted: int = 0
    duplicates: int = 0


def sample_latency(lat: Latency, u: float, z: float) -> float:
    """A delay of ``lat`` from one uniform ``u`` in [0, 1) and one standard normal ``z``."""
    if lat.jitter_s <= 0:
        return lat.base_s
    if lat.dist == "uniform":
        return lat.base_s + 2.0 * lat.jitter_s * u
    if lat.dist == "lognormal":
        return lat.base_s + math.exp(math.log(lat.jitter_s) - 0.5 + z)
    return lat.base_s - lat.jitter_s * math.log1p(-u)


def gateway_id(index: int) -> str:
    return f"gw-{index:02d}"


def gateway_eui(index: int) -> str:
    return f"00800000A000{index:04X}"


@functools.lru_cache(maxsize=64)
def _data_rate(region: str, dr: int) -> DataRate:
    return lookup_region(region).dr(dr)


class NetworkServer:
    """Deduplicating, counter-checking network server with backhaul and integration
    effects. ``gateways`` fixes how many backhaul draws each frame takes (keep it at the
    number of gateways so every device's draws stay independent of reception)."""

    def __init__(self, config: NetworkConfig | None = None, *, seed: int = 0, gateways: int = 1,
                 start: float = 0.0):
        self.config = config or NetworkConfig()
        self.seed = seed
        self.gateways = max(1, gateways)
        self.start = start
        self.stats = NetworkStats()
        self._rngs: dict[str, np.random.Generator] = {}
        #: (process time, seq, frame, copies, draws)
        self._heap: list[tuple] = []
        self._seq = 0
        self._last: dict[str, tuple[int, int]] = {}
        self._outages: dict[int, list[tuple[float, float]]] = {}
        for o in self.config.outages:
            self._outages.setdefault(o.gateway, []).append((start + o.start_s, start + o.start_s + o.duration_s))
        self._flush_next: dict[tuple[int, int], float] = {}

    @classmethod
    def ideal(cls, *, seed: int = 0) -> NetworkServer:
        """No latency, no dedup wait, no outages, no duplicates: frames go straight through."""
        cfg = NetworkConfig(dedup_window_s=0.0, backhaul=Latency(0.0, 0.0), delivery=Latency(0.0, 0.0))
        return cls(cfg, seed=seed)

    def _rng(self, eui: str) -> np.random.Generator:
        rng = self._rngs.get(eui)
        if rng is None:
            rng = self._rngs[eui] = stream(self.seed, NETWORK, eui_key(eui))
        return rng

    def _backhaul_exit(self, gw: int, t_rx: float) -> float:
        """When a frame received by ``gw`` at ``t_rx`` leaves the gateway (late when its
        backhaul is down: buffered, then flushed in order when it returns)."""
        for k, (a, b) in enumerate(self._outages.get(gw, ())):
            if a <= t_rx < b:
                slot = (gw, k)
                t = self._flush_next.get(slot, b)
                self._flush_next[slot] = t + self.config.flush_spacing_s
                return t
        return t_rx

    def submit(self, frame: Frame, receptions: Sequence[Reception] | None = None) -> float | None:
        """Hand the network server a frame and the gateways that heard it (default:
        gateway 0 with a good link). Submit frames in order of their end times.
        Returns when its deduplication window closes (None: nobody heard it)."""
        cfg = self.config
        rng = self._rng(frame.dev_eui)
        n = max(self.gateways, 1 + max((r.gateway for r in receptions or ()), default=0))
        # a fixed number of draws per frame, whatever was received: the device's later
        # draws never depend on other devices or on the channel
        u = rng.random(n + 3).tolist()
        z = rng.standard_normal(n + 3).tolist()
        bh = cfg.backhaul
        backhaul = [sample_latency(bh, u[g], z[g]) for g in range(n)]
        draws = (sample_latency(cfg.delivery, u[n], z[n]), u[n + 1],
                 sample_latency(cfg.duplicate_delay, u[n + 2], z[n + 2]))
        self.stats.frames += 1
        if receptions is None:
            receptions = (Reception(0),)
        if not receptions:
            self.stats.unheard += 1
            return None
        arrivals = sorted(
            (self._backhaul_exit(r.gateway, frame.end_time) + backhaul[r.gateway], r.gateway, r)
            for r in receptions
        )
        first = arrivals[0][0]
        close = first + cfg.dedup_window_s
        copies = [r for t, _, r in arrivals if t <= close]
        self.stats.late_copies += len(arrivals) - len(copies)
        self._seq += 1
        heapq.heappush(self._heap, (close, self._seq, frame, copies, draws))
        return close

    def pop_due(self, until: float) -> list[Delivery]:
        """Process every frame whose dedup window closed by ``until``; returns the
        deliveries they cause (their times may lie after ``until``), in processing order."""
        out: list[Delivery] = []
        heap = self._heap
        while heap and heap[0][0] <= until:
            self._process(heapq.heappop(heap), out)
        return out

    def drain(self) -> list[Delivery]:
        """Process everything pending; deliveries sorted by delivery time."""
        out = self.pop_due(math.inf)
        out.sort(key=lambda d: d.time)
        return out

    def uplink(self, frame: Frame, receptions: Sequence[Reception] | None = None) -> list[Delivery]:
        """Submit one frame and return everything that is then deliverable (sorted)."""
        self.submit(frame, receptions)
        return self.drain()

    def _process(self, p: tuple, out: list[Delivery]) -> None:
        cfg = self.config
        at, _, f, copies, draws = p
        if cfg.fcnt_check:
            last = self._last.get(f.dev_eui)
            if last is not None and (f.session, f.fcnt) <= last:
                self.stats.dropped_fcnt += 1
                return
            self._last[f.dev_eui] = (f.session, f.fcnt)
        self.stats.accepted += 1
        up = self.app_uplink(f, copies, at)
        delivery_latency, dup_u, dup_delay = draws
        t = at + delivery_latency
        out.append(Delivery(t, up, f))
        if dup_u < cfg.duplicate_p:
            self.stats.duplicates += 1
            out.append(Delivery(t + dup_delay, up, f, duplicate=True))

    def app_uplink(self, f: Frame, copies: Iterable[Reception], received: float) -> AppUplink:
        """The :class:`AppUplink` the network server hands over for ``f``."""
        dr = _data_rate(f.region, f.dr)
        end_ms = round(f.end_time * 1000)
        gws = tuple(
            GatewayRx(gateway_id(r.gateway), round(float(r.rssi)), round(float(r.snr), 1), end_ms,
                      gateway_eui(r.gateway), 0)
            for r in copies
        )
        airtime = f.airtime_s or dr.time_on_air(len(f.payload))
        return AppUplink(
            dev_eui=f.dev_eui, fport=f.fport, fcnt=f.fcnt, payload=f.payload,
            received_ns=round(received * 1e9), region=dr.region, dr=dr.index, sf=dr.sf, bw_hz=dr.bw_hz,
            frequency_hz=f.frequency_hz, gateways=gws, application_id=self.config.application_id,
            dev_addr="26" + f.dev_eui[-6:].upper(), uid=(f.session << 32) | f.fcnt, airtime_s=airtime,
        )


__all__ = [
    "Delivery", "Frame", "Latency", "NetworkConfig", "NetworkServer", "NetworkStats", "Outage", "Reception",
    "sample_latency",
]
