"""Realistic measurement records for simulated devices, built with the project's codec."""

from __future__ import annotations

import math

import numpy as np

from collector.core.wire import (
    MISSING_SAMPLE,
    Channel,
    Config,
    Diagnostics,
    Location,
    Record,
    Site,
)
from devicesim.config import RecordShape

#: per channel position: (unit code, exponent, mean, daily amplitude, noise) in SI-ish units
_CHANNEL_KINDS = (
    (1, -2, 11.0, 6.0, 0.3),  # celsius, 0.01 degC
    (2, -1, 70.0, -15.0, 1.5),  # percent_rh, 0.1 %
    (3, -1, 1013.0, 2.0, 0.3),  # hectopascal, 0.1 hPa
    (4, -3, 3.55, 0.02, 0.005),  # volt, mV
)
#: reference point the fleet is placed around (lat, lon in degrees)
ORIGIN = (47.3769, 8.5417)
_M_PER_DEG_LAT = 111_320.0


def make_record(
    rng: np.random.Generator,
    *,
    serial: int,
    seq: int,
    end_time: float,
    interval_s: int,
    shape: RecordShape,
    position: tuple[float, float],
    upload_hour: int,
    dr: int,
    uptime_s: int,
    reset_count: int,
    last_rssi: float,
    site: str,
) -> Record:
    """One record covering ``shape.samples`` samples ending at ``end_time``."""
    k = shape.samples
    c = shape.channels
    start = int(end_time) - k * interval_s
    t = start + interval_s * np.arange(k)
    phase = 2 * math.pi * ((t % 86400) / 86400.0 - 0.375)  # warmest mid-afternoon
    kinds = np.asarray(_CHANNEL_KINDS[:c], dtype=float)
    unit, exp, mean, amp, noise = (kinds[:, j : j + 1] for j in range(5))
    values = mean + amp * np.sin(phase)[None, :] + noise * rng.standard_normal((c, k))
    raw = np.clip(np.rint(values / 10.0**exp), -32767, 32767).astype(np.int64)
    raw[rng.random((c, k)) < 0.002] = MISSING_SAMPLE
    channels = [Channel(int(unit[i, 0]), int(exp[i, 0]), row) for i, row in enumerate(raw.tolist())]
    # scalar draws, always the same number of them
    u = rng.random(8).tolist()
    z = rng.standard_normal(3).tolist()
    battery = int(3600 - (seq % 2000) * 0.2 + 5 * z[0])
    x, y = position
    blocks = set(shape.blocks)
    rec = Record(
        device_serial=serial,
        record_seq=seq & 0xFFFF,
        start_time=start,
        interval_s=interval_s,
        channels=channels,
        flags=0b1 | (0b10 if battery < 3300 else 0),
        fw_major=2,
        fw_minor=3,
        battery_mv=battery,
        temp_centi=int(1500 + 300 * z[1]),
    )
    if "location" in blocks:
        lat = ORIGIN[0] + y / _M_PER_DEG_LAT
        lon = ORIGIN[1] + x / (_M_PER_DEG_LAT * math.cos(math.radians(ORIGIN[0])))
        rec.location = Location(round(lat * 1e7), round(lon * 1e7), int(400 + 3 * z[2]), 8 + int(17 * u[0]), 2)
    if "diagnostics" in blocks:
        rec.diagnostics = Diagnostics(
            uptime_s=max(0, min(uptime_s, 0xFFFFFFFF)),
            reset_count=reset_count & 0xFFFF,
            reset_reason=0 if reset_count == 0 else 1,
            tx_failures=int(-0.3 * math.log1p(-u[1]) * 3),
            last_dl_rssi=int(max(-150, min(0, last_rssi))),
            last_dl_snr_q=int(-40 + 80 * u[2]),
            modem_fw_major=1,
            modem_fw_minor=4,
            free_storage_kb=int(100 + 3900 * u[3]),
        )
    if "config" in blocks:
        rec.config = Config(config_version=3, upload_hour=upload_hour % 24, preferred_dr=dr,
                            alarm_low=-1000, alarm_high=4000)
    if "site" in blocks:
        rec.site = Site(site.encode("ascii")[:16])
    return rec
