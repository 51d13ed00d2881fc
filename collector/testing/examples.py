"""The one record generator of the tests, the simulator, the radio rig and the demos.

- :func:`example_record`: the record the spec's worked sizes use (658 bytes), fixed;
- :func:`make_record`: realistic records from a seeded stream (the simulator's
  devices, each with its own stream; the radio rig through :func:`seeded_record`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from collector.core.wire import (
    BLOCK_NAMES,
    MISSING_SAMPLE,
    Channel,
    Config,
    Diagnostics,
    Location,
    Record,
    Site,
)

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


class Shape(Protocol):
    """What a generated record holds (``devicesim``'s ``RecordShape`` is one)."""

    channels: int
    samples: int
    blocks: tuple[str, ...]


@dataclass(frozen=True)
class _Shape:
    channels: int
    samples: int
    blocks: tuple[str, ...] = BLOCK_NAMES


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
    shape: Shape,
    position: tuple[float, float],
    upload_hour: int,
    dr: int,
    uptime_s: int,
    reset_count: int,
    last_rssi: float,
    site: str,
) -> Record:
    """One realistic record covering ``shape.samples`` samples ending at ``end_time``:
    a daily cycle with noise and the odd missed sample per channel, and the optional
    blocks ``shape.blocks`` names. Every draw comes from ``rng`` (the caller's seeded
    stream), always the same number of them for a given shape."""
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


def seeded_record(serial: int, seq: int, *, samples: int = 144, start_time: int = 1_795_000_000,
                  seed: int = 0) -> Record:
    """A :func:`make_record` record with two channels of ``samples`` samples taken
    every 10 minutes from ``start_time + seq * samples * 600``, and all four optional
    blocks (658 bytes at the default 144 samples). Deterministic for (serial, seq,
    seed): its own stream, seeded by the three."""
    rng = np.random.default_rng([seed & 0xFFFF_FFFF_FFFF_FFFF, serial, seq])
    end = start_time + (seq + 1) * samples * 600
    return make_record(rng, serial=serial, seq=seq, end_time=end, interval_s=600,
                       shape=_Shape(2, samples), position=(0.0, 0.0), upload_hour=6, dr=0,
                       uptime_s=86_400 * (seq + 1), reset_count=3, last_rssi=-97.0, site="bench")
