"""Seeded random streams, one per component and device.

A stream is keyed by ``(seed, component, key)`` through :class:`numpy.random.SeedSequence`
``spawn_key``, so a device's draws depend only on the seed, the component and that
device's key: adding a device, or another component drawing more, changes nothing else.
"""

from __future__ import annotations

import numpy as np

#: component ids (never renumber: they are part of what a seed means)
PLACEMENT = 1
SCHEDULE = 2
RECORD = 3
RADIO = 4
LOSS = 5
NETWORK = 6
REBOOT = 7
DR_MIX = 8
DOWNLINK = 9
DOWNLINK_LOSS = 10


def stream(seed: int, component: int, key: int = 0) -> np.random.Generator:
    """The random stream of ``component`` for ``key`` (a device index or EUI)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(component, key))))


def dev_eui(index: int) -> str:
    """Deterministic device EUI of device ``index``: ``70B3D57ED0`` + 6 hex digits."""
    if not 0 <= index < 1 << 24:
        raise ValueError(f"device index {index} outside 0..{(1 << 24) - 1}")
    return f"70B3D57ED0{index:06X}"


def eui_key(eui: str) -> int:
    """The stream key of a device EUI (its 64-bit value)."""
    return int(eui, 16)
