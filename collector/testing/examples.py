"""Example records: the one the spec's worked sizes use, for demos, tests and benchmarks."""

from __future__ import annotations

import math

from collector.core.wire import Channel, Config, Diagnostics, Location, Record, Site

EXAMPLE_DEV_EUI = "70B3D57ED005A1B2"


def example_record(samples: int = 144, channels: int = 2, blocks: bool = True) -> Record:
    """A realistic record: temperature and humidity every 10 minutes for a day (C=2,
    K=144) with all four optional blocks: 658 bytes, the spec's worked example."""
    temp = [round(2137 + 300 * math.sin(2 * math.pi * i / samples)) for i in range(samples)]
    rh = [round(551 - 40 * math.sin(2 * math.pi * i / samples)) for i in range(samples)]
    temp[min(7, samples - 1)] = -32768  # one sample the sensor missed
    chans = [Channel(1, -2, temp), Channel(2, -1, rh), Channel(3, -1, [10132] * samples), Channel(4, -3, [3300] * samples)]
    rec = Record(
        device_serial=1234567, record_seq=4711, start_time=1795478400, interval_s=600,
        channels=chans[:channels], flags=0b0011, fw_major=2, fw_minor=7, battery_mv=3612, temp_centi=2137,
    )
    if blocks:
        rec.location = Location(525200066, 134049540, 34, 9, 2)
        rec.diagnostics = Diagnostics(86400, 2, 1, 3, -90, 28, 1, 0, 100)
        rec.config = Config(1, 6, 3, -100, 100)
        rec.site = Site(b"PUMP-7".ljust(16, b"\0"))
    return rec
