"""A transmitter's duty-cycle bookkeeping for one sub-band (sans-IO, times in seconds).

ETSI EN 300 220 limits the share of time a transmitter is on in a sub-band over an
hour. The usual per-frame rule, "after a frame of airtime t the sub-band stays
closed for t/dc - t", keeps the long-run share at dc but lets one hour hold up to
``dc * 3600`` s plus one more frame (a saturated DR0 device reached 38.3 s, 1.06 %, in
some hours). :class:`Band` applies both: the off-time after each frame, and a budget
of ``dc * 3600`` s of airtime over *any* window of an hour (sliding, so every clock
hour is within it too). Devices and gateways (downlinks) keep one per sub-band.
"""

from __future__ import annotations

from collections import deque

#: the window the budget applies to, seconds
HOUR = 3600.0
_EPS = 1e-9


class Band:
    """Off-time and hourly airtime budget of one sub-band with duty cycle ``dc``."""

    __slots__ = ("budget", "dc", "free", "frames", "total", "window")

    def __init__(self, dc: float, window: float = HOUR):
        self.dc = dc
        self.window = window
        self.budget = dc * window
        #: earliest start allowed by the per-frame off-time rule
        self.free = 0.0
        #: (start, end) of the frames that may still fall in a window, in time order
        #: (one transmitter: they do not overlap), and their total airtime
        self.frames: deque[tuple[float, float]] = deque()
        self.total = 0.0

    def earliest(self, t: float, toa: float) -> float:
        """The earliest start at or after ``t`` of a frame of ``toa`` seconds."""
        if self.dc >= 1.0:
            return t
        t = max(t, self.free)
        if toa > self.budget:  # can never fit; the off-time rule alone applies
            return t
        frames = self.frames
        while True:
            w0 = t + toa - self.window
            # within _EPS: t below is computed as e0 + window - toa, and w0 back from it
            # may round a hair below e0; the frame must leave the window then, or the
            # loop slides to the same t for ever
            while frames and frames[0][1] <= w0 + _EPS:
                s, e = frames.popleft()
                self.total -= e - s
            if not frames:
                self.total = 0.0
                return t
            s0, e0 = frames[0]
            # frames do not overlap, so only the oldest can straddle the window's start
            used = self.total - (w0 - s0 if s0 < w0 else 0.0)
            if used + toa <= self.budget + _EPS:
                return t
            # slide the window past (part of) the oldest frame
            rest = used - (e0 - max(s0, w0))
            room = self.budget - toa - rest
            new_w0 = e0 - room if room > 0 else e0
            t = max(t, new_w0 + self.window - toa)

    def is_open(self, t: float, toa: float) -> bool:
        return self.earliest(t, toa) <= t

    def add(self, t: float, toa: float) -> None:
        """A frame of ``toa`` seconds starts at ``t``."""
        if self.dc >= 1.0:
            return
        self.free = t + toa / self.dc
        self.frames.append((t, t + toa))
        self.total += toa


def hourly_spacing(toa: float, dc: float, window: float = HOUR) -> float:
    """Start-to-start spacing of equal frames of ``toa`` seconds that keeps any window
    of ``window`` seconds within ``dc * window`` of airtime."""
    if dc >= 1.0 or toa >= dc * window:
        return 0.0
    return window * toa / (dc * window - toa)


def message_duration(airtimes: list[float], dc: float, gap: float = 0.0) -> float:
    """Shortest time from the start of the first frame to the end of the last of frames
    with these airtimes, sent back to back on one sub-band of duty cycle ``dc`` (off-time
    and the hourly budget), at least ``gap`` seconds between a frame's end and the next."""
    band = Band(dc)
    t = end = 0.0
    for toa in airtimes:
        t = band.earliest(t, toa)
        band.add(t, toa)
        end = t + toa
        t = end + gap
    return end
