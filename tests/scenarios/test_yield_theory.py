"""The reports' theoretical yield curves against direct counts: the closed forms agree
with enumeration and with the simulator's own loss streams."""

from __future__ import annotations

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def th():
    spec = importlib.util.spec_from_file_location("yield_theory", ROOT / "reports" / "yield_theory.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize(("k", "r", "p"), [(3, 0, 0.2), (4, 2, 0.1), (5, 3, 0.3)])
def test_binomial_tail_equals_enumeration(th, k, r, p):
    m = k + r
    exact = sum(np.prod([(1 - p) if x else p for x in bits])
                for bits in itertools.product((0, 1), repeat=m) if sum(bits) >= k)
    assert th.v2_yield(k, r, p) == pytest.approx(exact)
    assert th.v2_yield(k, 0, p) == pytest.approx(th.v1_yield(k, p))


def test_gilbert_with_memoryless_states_is_binomial(th):
    # p_gb + p_bg = 1: the next state does not depend on the current one
    assert th.gilbert_at_least(5, 7, 0.2, 0.8) == pytest.approx(th.v2_yield(5, 2, 0.2))
    assert th.gilbert_mean_loss(0.05, 0.3) == pytest.approx(0.05 / 0.35)


def test_gilbert_matches_the_simulator_chain(th):
    """Frames of the simulator's Gilbert-Elliott rule, counted: within 3 sigma of the formula."""
    rng = np.random.default_rng(5)
    p_gb, p_bg, m, k, trials = 0.05, 0.3, 14, 12, 20000
    bad = rng.random(trials) < p_gb / (p_gb + p_bg)  # stationary start
    got = np.zeros(trials, dtype=int)
    for _ in range(m):
        u = rng.random((trials, 2))
        bad = np.where(bad, ~(u[:, 0] < p_bg), u[:, 0] < p_gb)
        got += ~bad
    freq = float((got >= k).mean())
    want = th.gilbert_at_least(k, m, p_gb, p_bg)
    assert abs(freq - want) < 3 * (want * (1 - want) / trials) ** 0.5 + 1e-3
    # bursts hurt v1 less, and parity enough for independent loss (4 rows) more, than
    # independent loss of the same mean
    p = th.gilbert_mean_loss(p_gb, p_bg)
    assert th.gilbert_at_least(m, m, p_gb, p_bg) > th.v1_yield(m, p)
    assert th.gilbert_at_least(m, m + 4, p_gb, p_bg) < th.v2_yield(m, 4, p)


def test_erasure_limit_is_below_every_scheme(th):
    for p in (0.1, 0.2, 0.3):
        lim = th.erasure_limit_frames(14, p)
        assert lim == pytest.approx(14 / (1 - p))
        assert th.v1_frames_per_delivered(14, p) > lim
        assert all(th.v2_frames_per_delivered(14, r, p) > lim for r in range(5))
