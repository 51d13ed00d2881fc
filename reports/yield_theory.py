"""Theoretical record yield and airtime, drawn beside the measured points.

- v1 (every one of n fragments needed): independent loss ``p`` gives ``(1-p)^n``;
- v2 without repair (any k of k + r frames rebuild the record): the binomial tail
  ``P(Bin(k + r, 1 - p) >= k)``;
- bursty loss: the same two events under a Gilbert-Elliott chain, computed exactly by
  a forward recursion over (state, frames received);
- the erasure channel's limit: no scheme delivers k chunks over a channel losing a
  share p of frames with fewer than ``k / (1 - p)`` frames on average.
"""

from __future__ import annotations

from math import comb


def v1_yield(n: int, p: float) -> float:
    """All ``n`` fragments arrive under independent loss ``p``."""
    return (1.0 - p) ** n


def v2_yield(k: int, r: int, p: float) -> float:
    """At least ``k`` of ``k + r`` frames arrive under independent loss ``p``."""
    m = k + r
    q = 1.0 - p
    return sum(comb(m, j) * q ** j * p ** (m - j) for j in range(k, m + 1))


def gilbert_mean_loss(p_gb: float, p_bg: float, loss_good: float = 0.0, loss_bad: float = 1.0) -> float:
    """Stationary loss rate of a Gilbert-Elliott chain."""
    bad = p_gb / (p_gb + p_bg) if p_gb + p_bg else 0.0
    return bad * loss_bad + (1.0 - bad) * loss_good


def gilbert_at_least(k: int, m: int, p_gb: float, p_bg: float, loss_good: float = 0.0,
                     loss_bad: float = 1.0) -> float:
    """P(at least ``k`` of ``m`` consecutive frames arrive) under a Gilbert-Elliott
    chain started in its stationary state; the chain steps before every frame, as the
    simulator's does."""
    pi_bad = p_gb / (p_gb + p_bg) if p_gb + p_bg else 0.0
    # dist[state][j]: probability of being in state (0 good, 1 bad) with j frames received
    dist = [[1.0 - pi_bad] + [0.0] * m, [pi_bad] + [0.0] * m]
    keep = (1.0 - loss_good, 1.0 - loss_bad)
    for _ in range(m):
        nxt = [[0.0] * (m + 1), [0.0] * (m + 1)]
        for s in (0, 1):
            to_bad = p_gb if s == 0 else 1.0 - p_bg
            for j, w in enumerate(dist[s]):
                if not w:
                    continue
                for s2, pt in ((0, 1.0 - to_bad), (1, to_bad)):
                    if pt:
                        nxt[s2][j + 1 if j < m else j] += w * pt * keep[s2]
                        nxt[s2][j] += w * pt * (1.0 - keep[s2])
        dist = nxt
    return sum(dist[s][j] for s in (0, 1) for j in range(k, m + 1))


def erasure_limit_frames(k: int, p: float) -> float:
    """Fewest frames on average to deliver ``k`` chunks over a channel losing ``p``."""
    return k / (1.0 - p) if p < 1 else float("inf")


def v1_frames_per_delivered(n: int, p: float) -> float:
    """v1 sends n frames per record and keeps the record only when all arrive."""
    y = v1_yield(n, p)
    return n / y if y else float("inf")


def v2_frames_per_delivered(k: int, r: int, p: float) -> float:
    """v2 without repair: k + r frames per record, kept when any k arrive."""
    y = v2_yield(k, r, p)
    return (k + r) / y if y else float("inf")
