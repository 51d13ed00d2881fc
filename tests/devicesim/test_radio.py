"""Time on air, duty cycle and the collision / capture model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from collector.core.lorawan import EU868, LORAWAN_PREAMBLE, off_time, time_on_air
from devicesim.channel import CRITICAL_PREAMBLE_SYMBOLS, collisions, path_loss, sensitivity
from devicesim.config import DRPolicy, ScheduleConfig, SimConfig
from devicesim.sim import simulate


@pytest.mark.parametrize(
    ("sf", "pl", "cr", "ms"),
    [(7, 10, 1, 41.216), (11, 10, 1, 577.536), (12, 13, 1, 1155.072), (12, 17, 1, 1318.912),
     (10, 24, 1, 370.688), (7, 255, 1, 399.616), (12, 20, 4, 1712.128)],
)
def test_time_on_air_vectors(sf, pl, cr, ms):
    assert time_on_air(sf, 125_000, pl, cr=cr) * 1000 == pytest.approx(ms, abs=1e-6)


def test_simulated_frames_use_the_toa_of_their_payload():
    c = SimConfig(hours=2, seed=3)
    c.devices.count = 3
    c.devices.schedule = ScheduleConfig(kind="every", every_min=60)
    c.devices.dr = DRPolicy(kind="fixed", dr=3)
    res = simulate(c)
    f = res.frames
    assert len(f) > 0
    for k in range(len(f)):
        assert f.airtime[k] == EU868.dr(3).time_on_air(len(f.payload[k]))


@pytest.mark.parametrize(("t", "dc"), [(0.5, 0.01), (2.793472, 0.01), (0.1, 0.001), (1.0, 0.1)])
def test_off_time_is_t_over_dc_minus_t(t, dc):
    assert off_time(t, dc) == pytest.approx(t / dc - t)


def test_devices_respect_the_sub_band_duty_cycle():
    """Every frame on the (single, 1 %) default EU868 sub-band starts no earlier than
    the previous frame's start + t/dc."""
    c = SimConfig(hours=24, seed=5)
    c.devices.count = 4
    c.devices.dr = DRPolicy(kind="fixed", dr=2)
    c.channel.model = "bernoulli"
    res = simulate(c)
    f = res.frames
    by_dev: dict[int, list[int]] = {}
    for k, d in enumerate(f.device):
        by_dev.setdefault(d, []).append(k)
    checked = 0
    for ks in by_dev.values():
        for a, b in zip(ks, ks[1:], strict=False):
            assert f.start[b] - f.start[a] >= f.airtime[a] / 0.01 - 1e-9
            checked += 1
    assert checked > 20


def test_fourteen_fragment_dr0_message_takes_about_an_hour():
    c = SimConfig(hours=6, seed=1)
    c.devices.count = 1
    c.devices.schedule = ScheduleConfig(kind="daily", hour=1, jitter_min=0)
    c.devices.dr = DRPolicy(kind="fixed", dr=0)
    c.channel.model = "bernoulli"
    res = simulate(c)
    (rec,) = res.records
    assert rec.count == 14 and len(rec.record) == 658
    last_toa = EU868.dr(0).time_on_air(len(rec.fragments[-1]))
    duration = rec.sent_at[-1] + last_toa - rec.sent_at[0]
    # 38.3 s of airtime: more than the 36 s an hour allows, so a little over an hour
    assert 3600 < duration < 4000, duration


def _brute_force(start, air, ch, sf, bw, power, capture, capture_db):
    n = start.size
    lost = np.zeros(power.shape, dtype=bool)
    tsym = (2.0**sf) / bw
    for i in range(n):
        cs = start[i] + ((LORAWAN_PREAMBLE - CRITICAL_PREAMBLE_SYMBOLS) * tsym[i] if capture else 0.0)
        for j in range(n):
            if i == j or ch[i] != ch[j] or sf[i] != sf[j] or bw[i] != bw[j]:
                continue
            if start[j] < start[i] + air[i] and start[j] + air[j] > cs:
                if not capture:
                    lost[:, i] = True
                else:
                    lost[:, i] |= power[:, i] - power[:, j] < capture_db
    return lost


@pytest.mark.parametrize("capture", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_collision_sweep_matches_brute_force(capture, seed):
    rng = np.random.default_rng(seed)
    n = 300
    sf = rng.choice([7, 9, 12], n)
    bw = np.full(n, 125_000)
    ch = rng.integers(0, 3, n)
    plen = rng.choice([20, 40, 64, 120], n)
    air = np.array([time_on_air(int(s), 125_000, int(p)) for s, p in zip(sf, plen, strict=True)])
    start = np.sort(rng.uniform(0, 200, n)) + 1.795e9 * (seed % 2)
    power = rng.normal(-110, 8, (2, n)).astype(np.float32)
    got = collisions(start, air, ch, sf, bw, power, capture=capture, capture_db=6.0)
    want = _brute_force(start, air, ch, sf, bw, power, capture, 6.0)
    assert got.sum() > 0
    assert np.array_equal(got, want)


def _aloha_config(g: float, devices: int = 400, capture: bool = False) -> SimConfig:
    c = SimConfig(region="EU868", hours=1.0, seed=11)
    c.devices.count = devices
    c.devices.radius_m = 30.0
    air = EU868.dr(5).time_on_air(7)
    hours = 6000 / (g / air) / 3600  # about 6000 frames on average in total
    c.hours = hours
    c.devices.schedule = ScheduleConfig(kind="poisson", mean_interval_s=devices * air / g, payload_bytes=7)
    c.devices.dr = DRPolicy(kind="fixed", dr=5)
    c.devices.duty_cycle = False
    c.devices.min_gap_s = 0.0
    c.devices.channels_hz = (868_100_000,)
    c.channel.shadowing_db = 0.0 if not capture else 8.0
    c.channel.capture = capture
    c.network.enabled = False
    return c


@pytest.mark.parametrize("g", [0.05, 0.2, 0.5, 1.0])
def test_pure_aloha_success_ratio(g):
    res = simulate(_aloha_config(g))
    s = res.stats
    assert s.uplinks_sent > 4000
    assert s.der == pytest.approx(math.exp(-2 * g), abs=0.03)


def test_capture_saves_frames():
    without = simulate(_aloha_config(0.5, capture=False)).stats.der
    with_capture = simulate(_aloha_config(0.5, capture=True)).stats.der
    assert with_capture > without + 0.05


def test_link_budget_numbers():
    assert sensitivity(12, 125_000) == -133.25
    assert sensitivity(7, 250_000) == pytest.approx(-126.5 + 3.0103, abs=1e-3)
    assert float(path_loss(40.0)) == pytest.approx(127.41)
    assert float(path_loss(400.0)) == pytest.approx(127.41 + 20.8)
