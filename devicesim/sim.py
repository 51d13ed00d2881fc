"""The simulation: devices (SimPy processes) -> radio channel -> gateways -> network
server -> application, in virtual time.

The model lives in :mod:`devicesim.model`, the statistics in :mod:`devicesim.stats`,
the engine in :mod:`devicesim.engine`; this module is the entry point.
"""

from __future__ import annotations

from devicesim.engine import Progress, simulate
from devicesim.model import Device, FrameTable, RecordTruth, SimResult, make_devices
from devicesim.stats import Stats

__all__ = ["Device", "FrameTable", "Progress", "RecordTruth", "SimResult", "Stats", "make_devices", "simulate"]
