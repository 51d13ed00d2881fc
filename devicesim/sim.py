"""The simulation: devices (SimPy processes) -> radio channel -> gateways -> network
server -> application, in virtual time.

The model lives in :mod:`devicesim.model`, the statistics in :mod:`devicesim.stats`,
the staged engine in :mod:`devicesim.engine`, the closed loop in :mod:`devicesim.loop`;
this module is the entry point.
"""

from __future__ import annotations

import gc

from devicesim.config import SimConfig
from devicesim.engine import Progress
from devicesim.engine import simulate as simulate_staged
from devicesim.loop import ClosedLoop, simulate_loop
from devicesim.model import Device, FrameTable, RecordTruth, SimResult, make_devices
from devicesim.stats import Stats


def simulate(config: SimConfig, *, progress: Progress | None = None) -> SimResult:
    """Run ``config`` in virtual time and return deliveries, ground truth and stats:
    through the closed loop (:mod:`devicesim.loop`) when it asks for it or a device
    group sends v2, else through the staged engine (:mod:`devicesim.engine`).

    ``progress`` is called with the fraction done (0..1) as the run proceeds.
    """
    cfg = config.validate()
    if cfg.engine == "loop" or (cfg.engine == "auto" and cfg.devices.any_v2):
        return _without_gc(simulate_loop, cfg, progress)
    return simulate_staged(cfg, progress=progress)


def _without_gc(fn, *args):
    # the run allocates many long-lived small objects and frees almost none: cyclic
    # garbage collection passes would only rescan them
    enabled = gc.isenabled()
    gc.disable()
    try:
        return fn(*args)
    finally:
        if enabled:
            gc.enable()


__all__ = ["ClosedLoop", "Device", "FrameTable", "Progress", "RecordTruth", "SimResult", "Stats", "make_devices", "simulate", "simulate_staged"]
