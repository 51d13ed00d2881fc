"""Regional parameters and time on air (radio-facts.md)."""

from __future__ import annotations

import pytest

from collector.core import lorawan


@pytest.mark.parametrize(
    "sf,pl,cr,ms",
    [(7, 10, 1, 41.216), (11, 10, 1, 577.536), (12, 13, 1, 1155.072), (12, 17, 1, 1318.912),
     (10, 24, 1, 370.688), (7, 255, 1, 399.616), (12, 20, 4, 1712.128)],
)
def test_time_on_air_matches_every_vector(sf, pl, cr, ms):
    assert lorawan.time_on_air(sf, 125_000, pl, cr=cr) * 1000 == pytest.approx(ms, abs=1e-6)


@pytest.mark.parametrize(
    "region,dr,n",
    [("EU868", 0, 51), ("EU868", 2, 51), ("EU868", 3, 115), ("EU868", 5, 222), ("EU868", 6, 222),
     ("US915", 0, 11), ("US915", 1, 53), ("US915", 2, 125), ("US915", 3, 242), ("US915", 4, 242)],
)
def test_max_payload_per_data_rate(region, dr, n):
    assert lorawan.max_payload(region, dr) == n


def test_full_frames_fit_the_us915_dwell_time():
    us = lorawan.region("US915")
    for d in us.data_rates:
        assert d.time_on_air(d.max_payload) <= us.dwell_time_s


def test_duty_cycle_off_time():
    assert lorawan.off_time(0.5, 0.01) == pytest.approx(49.5)
    assert lorawan.off_time(0.5, 1.0) == 0.0
    eu = lorawan.region("EU868")
    assert eu.duty_cycle(868_100_000) == 0.01
    assert eu.duty_cycle(869_525_000) == 0.10
    assert eu.duty_cycle(864_000_000) == 0.001


def test_a_14_fragment_dr0_message_takes_about_an_hour_at_1_percent():
    dr = lorawan.region("EU868").dr(0)
    n, _ = lorawan.message_airtime(dr, 658)
    assert n == 14
    t = lorawan.min_message_duration(dr, n, 51, 0.01)
    assert 45 * 60 < t < 75 * 60


def test_data_rate_names():
    assert lorawan.parse_data_rate_name("SF9BW125") == (9, 125_000)
    assert lorawan.region("US915").dr_for(8, 500_000).index == 4
    with pytest.raises(ValueError, match="not of the form"):
        lorawan.parse_data_rate_name("fast")
    with pytest.raises(ValueError, match="unknown region"):
        lorawan.region("XX123")
