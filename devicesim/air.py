"""The air as the closed loop sees it: frames resolved one by one as they end, and
gateways that transmit downlinks (sans-IO, times in seconds of virtual time).

:class:`Air` applies the collision rule of :func:`devicesim.channel.collisions` to
one frame at a time: when a frame ends, every frame that could overlap it has
started, so its fate is known then, and a device's next move may depend on it. Same
channel, SF and bandwidth, overlapping in time; with capture a frame survives unless
another overlaps its critical section (its last 5 preamble symbols to its end) and is
not at least ``capture_db`` weaker. Powers are compared in float32 as the vectorised
check does, so both give the same answer frame for frame.

:class:`Gateways` keeps what each gateway transmits: its downlinks' sub-band duty
cycle (off-time and hourly budget, :class:`devicesim.dutycycle.Band`) and, being
half-duplex, the intervals during which it hears nothing on any channel.
"""

from __future__ import annotations

import struct
from collections import deque

from collector.core.lorawan import LORAWAN_PREAMBLE, Region
from devicesim.channel import CRITICAL_PREAMBLE_SYMBOLS
from devicesim.dutycycle import Band


def _f32(xs: list[float]) -> list[float]:
    """Each value rounded to float32 (as plain floats)."""
    fmt = f"{len(xs)}f"
    return list(struct.unpack(fmt, struct.pack(fmt, *xs)))


class Air:
    def __init__(self, *, collisions: bool = True, capture: bool = True, capture_db: float = 6.0):
        self.collisions = collisions
        self.capture = capture
        self.capture_db = _f32([capture_db])[0]
        #: per channel: frames that may still overlap a frame ending now
        #: (start, end, critical start, sf, bw, power per gateway, capture threshold per gateway, id)
        self._on: dict[int, deque[tuple]] = {}
        self._longest = 0.0

    def start(self, fid: int, start: float, airtime: float, channel: int, sf: int, bw: int,
              power: list[float]) -> None:
        """A frame goes on the air; ``power`` its received power at each gateway (dBm)."""
        p32 = _f32(power)
        tsym = (2.0 ** sf) / bw
        cs = start + (LORAWAN_PREAMBLE - CRITICAL_PREAMBLE_SYMBOLS) * tsym if self.capture else start
        # float32 subtraction: the exact difference of two float32 values, rounded to float32
        thr = _f32([p - self.capture_db for p in p32])
        if airtime > self._longest:
            self._longest = airtime
        q = self._on.get(channel)
        if q is None:
            q = self._on[channel] = deque()
        q.append((start, start + airtime, cs, sf, bw, p32, thr, fid))
        horizon = start - 2 * self._longest
        while q and q[0][1] < horizon:
            q.popleft()

    def collided(self, fid: int, channel: int) -> list[bool] | None:
        """At the end of frame ``fid``: at which gateways it is lost to a collision
        (None: at none)."""
        if not self.collisions:
            return None
        q = self._on.get(channel, ())
        me = next((f for f in q if f[7] == fid), None)
        if me is None:
            return None
        start, end, cs, sf, bw, _, thr, _ = me
        lost: list[bool] | None = None
        for o in q:
            if o[7] == fid or o[3] != sf or o[4] != bw or not (o[0] < end and o[1] > cs):
                continue
            if not self.capture:
                return [True] * len(thr)
            op = o[5]
            hit = [op[g] > thr[g] for g in range(len(thr))]
            lost = hit if lost is None else [a or b for a, b in zip(lost, hit, strict=True)]
        return lost


class Gateways:
    """Downlink transmissions of each gateway: duty cycle per sub-band, half-duplex."""

    def __init__(self, region: Region, count: int, *, duty_cycle: bool = True):
        self.region = region
        self.duty_cycle = duty_cycle
        self._bands: list[dict[tuple[int, int], Band]] = [{} for _ in range(count)]
        self._tx: list[deque[tuple[float, float]]] = [deque() for _ in range(count)]
        self.airtime = [0.0] * count

    def _band(self, g: int, freq_hz: int) -> Band:
        sb = self.region.sub_band(freq_hz)
        key = (sb.low_hz, sb.high_hz)
        b = self._bands[g].get(key)
        if b is None:
            b = self._bands[g][key] = Band(sb.duty_cycle if self.duty_cycle else 1.0)
        return b

    def can_send(self, g: int, t: float, toa: float, freq_hz: int) -> bool:
        """Gateway ``g`` is free to transmit ``toa`` seconds from ``t`` on ``freq_hz``."""
        if any(s < t + toa and t < e for s, e in self._tx[g]):
            return False
        return self._band(g, freq_hz).is_open(t, toa)

    def send(self, g: int, t: float, toa: float, freq_hz: int) -> None:
        self._band(g, freq_hz).add(t, toa)
        self._tx[g].append((t, t + toa))
        self.airtime[g] += toa

    def deaf(self, g: int, start: float, end: float) -> bool:
        """Gateway ``g`` transmitted during part of ``[start, end]``. Ask in order of
        ``end`` (frames as they end): transmissions over before ``end - 30`` s are
        forgotten, since no frame lasts that long."""
        tx = self._tx[g]
        while tx and tx[0][1] < end - 30.0:
            tx.popleft()
        return any(s < end and start < e for s, e in tx)
