"""Shared helpers for the simulator tests."""

from __future__ import annotations

import pytest

from devicesim.config import DRPolicy, ScheduleConfig, SimConfig


def small_config(**over) -> SimConfig:
    """A quick, loss-free configuration: a few devices sending every 30 min at DR5."""
    c = SimConfig(hours=over.pop("hours", 6.0), seed=over.pop("seed", 7))
    c.devices.count = over.pop("devices", 5)
    c.devices.schedule = ScheduleConfig(kind="every", every_min=over.pop("every_min", 30.0))
    c.devices.dr = DRPolicy(kind="fixed", dr=over.pop("dr", 5))
    c.channel.model = "bernoulli"
    c.channel.p = over.pop("p", 0.0)
    assert not over, over
    return c


@pytest.fixture
def make_config():
    return small_config
