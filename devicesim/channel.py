"""Radio channel: link budget and collisions with the capture effect (vectorised).

Numbers from docs/spec/radio-facts.md (LoRaSim / FLoRa constants, SX1272
sensitivities). The collision check sorts frames once and answers, for every frame,
"the strongest other frame that overlaps my critical section" with range-maximum
queries over frames sorted by start time per (channel, SF, BW, airtime) class:
O(n log n + n * classes), independent of how many frames are in the air at once.
"""

from __future__ import annotations

import math

import numpy as np

from collector.core.lorawan import LORAWAN_PREAMBLE

#: receiver sensitivity at 125 kHz, dBm (SX1272, as used by LoRaSim)
SENSITIVITY_125 = {7: -126.5, 8: -127.25, 9: -131.25, 10: -132.75, 11: -134.5, 12: -133.25}
#: demodulation SNR floor, dB
SNR_FLOOR = {7: -7.5, 8: -10.0, 9: -12.5, 10: -15.0, 11: -17.5, 12: -20.0}
#: symbols of the preamble that must be free of interference for a frame to be received
CRITICAL_PREAMBLE_SYMBOLS = 5


def sensitivity(sf: int, bw_hz: int) -> float:
    """Receiver sensitivity (dBm) at ``sf`` and ``bw_hz`` (3 dB worse per bandwidth doubling)."""
    return SENSITIVITY_125[sf] + 10 * math.log10(bw_hz / 125_000)


def noise_floor(bw_hz: int, noise_figure_db: float = 6.0) -> float:
    return -174.0 + 10 * math.log10(bw_hz) + noise_figure_db


def path_loss(distance_m, pl_d0_db: float = 127.41, d0_m: float = 40.0, gamma: float = 2.08):
    """Mean log-distance path loss (dB); ``distance_m`` scalar or array (clipped to 1 m)."""
    d = np.maximum(np.asarray(distance_m, dtype=float), 1.0)
    return pl_d0_db + 10.0 * gamma * np.log10(d / d0_m)


def _range_max(table: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Max of ``table[:, 0, lo:hi]`` per query via the sparse table; -inf when empty."""
    length = hi - lo
    ok = length > 0
    k = np.zeros_like(length)
    k[ok] = np.floor(np.log2(length[ok])).astype(length.dtype)
    lo_c = np.where(ok, lo, 0)
    hi_c = np.where(ok, hi - (1 << k), 0)
    out = np.maximum(table[:, k, lo_c], table[:, k, hi_c])
    out[:, ~ok] = -np.inf
    return out


def _sparse_table(vals: np.ndarray, levels: int) -> np.ndarray:
    g, m = vals.shape
    table = np.full((g, levels, m), -np.inf, dtype=np.float32)
    table[:, 0] = vals
    for k in range(1, levels):
        half = 1 << (k - 1)
        span = m - (1 << k) + 1
        if span <= 0:
            break
        table[:, k, :span] = np.maximum(table[:, k - 1, :span], table[:, k - 1, half : half + span])
    return table


def collisions(
    start: np.ndarray,
    airtime: np.ndarray,
    channel: np.ndarray,
    sf: np.ndarray,
    bw: np.ndarray,
    power: np.ndarray,
    *,
    capture: bool = True,
    capture_db: float = 6.0,
) -> np.ndarray:
    """Which frames each gateway loses to collisions.

    ``power`` is ``(gateways, frames)`` received power in dBm. Two frames collide when
    they share channel, SF and bandwidth and overlap in time. With ``capture``, a frame
    is lost only when another frame overlaps its critical section (from its last
    ``CRITICAL_PREAMBLE_SYMBOLS`` preamble symbols to its end) and it is not at least
    ``capture_db`` stronger than that frame (LoRaSim's rule); without capture every
    overlap destroys both frames (pure ALOHA). Returns a bool array like ``power``.
    """
    n = start.shape[0]
    power = np.atleast_2d(power).astype(np.float32)
    if n < 2:
        return np.zeros(power.shape, dtype=bool)
    t0 = float(start.min())
    rel = start - t0
    big = float(2 ** math.ceil(math.log2(rel.max() + airtime.max() + 10.0)))
    ct = channel.astype(np.float64) * big + rel
    # work in (channel, time) order: the binary searches below then walk memory in order
    perm = np.argsort(ct, kind="stable")
    lost_sorted = _collisions_sorted(ct[perm], airtime[perm], sf[perm], bw[perm], power[:, perm],
                                     capture, capture_db)
    lost = np.empty_like(lost_sorted)
    lost[:, perm] = lost_sorted
    return lost


def _collisions_sorted(ct, airtime, sf, bw, power, capture: bool, capture_db: float) -> np.ndarray:
    n = ct.shape[0]
    lost = np.zeros(power.shape, dtype=bool)
    tsym = (2.0 ** sf) / bw
    cs = ct + (LORAWAN_PREAMBLE - CRITICAL_PREAMBLE_SYMBOLS) * tsym if capture else ct
    ce = ct + airtime
    fam = sf.astype(np.int64) * 1_000_000 + bw // 1000
    for f in np.unique(fam):
        q = np.flatnonzero(fam == f)
        q_cs, q_ce = cs[q], ce[q]
        fam_air = airtime[q]
        for d in np.unique(fam_air):
            members = q[fam_air == d]
            mem = members  # already in (channel, time) order
            ctm = ct[mem]
            lo = np.searchsorted(ctm, q_cs - d, side="right")
            hi = np.searchsorted(ctm, q_ce, side="left")
            # position of each query frame among the members (-1 when not a member)
            pos = np.full(n, -1, dtype=np.int64)
            pos[mem] = np.arange(mem.size)
            qpos = pos[q]
            is_mem = qpos >= 0
            if not capture:
                cnt = hi - lo - is_mem.astype(np.int64)
                lost[:, q[cnt > 0]] = True
                continue
            width = int((hi - lo).max(initial=0))
            if width == 0 or (width == 1 and np.all(is_mem[(hi - lo) > 0])):
                continue
            levels = max(1, int(math.floor(math.log2(width))) + 1)
            table = _sparse_table(power[:, mem], levels)
            p1 = np.where(is_mem, qpos, hi)
            m1 = _range_max(table, lo, p1)
            m2 = _range_max(table, np.where(is_mem, qpos + 1, hi), hi)
            strongest = np.maximum(m1, m2)
            lost[:, q] |= strongest > power[:, q] - np.float32(capture_db)
    return lost
