"""LoRaWAN radio facts shared by the collector, the simulator and the radio rig.

Everything here is a pure function of its arguments (no clock, no I/O). Sources:
LoRaWAN Regional Parameters RP002 / v1.0.3, Semtech AN1200.13 (time on air),
ETSI EN 300 220 (EU868 sub-band duty cycles); see docs/spec/radio-facts.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

#: LoRaWAN overhead added to the application payload: MHDR 1, FHDR 7 (no FOpts),
#: FPort 1, MIC 4.
PHY_OVERHEAD = 13
#: LoRaWAN preamble length in symbols.
LORAWAN_PREAMBLE = 8


@dataclass(frozen=True)
class DataRate:
    region: str
    index: int
    sf: int
    bw_hz: int
    #: maximum application payload N (FRMPayload bytes) at this data rate
    max_payload: int

    @property
    def name(self) -> str:
        return f"SF{self.sf}BW{self.bw_hz // 1000}"

    def time_on_air(self, app_payload_len: int) -> float:
        """Seconds on air of an uplink carrying ``app_payload_len`` FRMPayload bytes."""
        return time_on_air(self.sf, self.bw_hz, app_payload_len + PHY_OVERHEAD)


@dataclass(frozen=True)
class SubBand:
    low_hz: int
    high_hz: int
    duty_cycle: float  # fraction, 0.01 for 1 %; 1.0 for none

    def contains(self, freq_hz: int) -> bool:
        return self.low_hz <= freq_hz <= self.high_hz


@dataclass(frozen=True)
class Region:
    name: str
    data_rates: tuple[DataRate, ...]
    sub_bands: tuple[SubBand, ...]
    #: default uplink channels (Hz) a device hops over
    channels: tuple[int, ...]
    #: maximum dwell time of one uplink, seconds (None: no limit)
    dwell_time_s: float | None

    def dr(self, index: int) -> DataRate:
        for d in self.data_rates:
            if d.index == index:
                return d
        raise ValueError(f"{self.name} has no uplink data rate DR{index}")

    def dr_for(self, sf: int, bw_hz: int) -> DataRate:
        for d in self.data_rates:
            if d.sf == sf and d.bw_hz == bw_hz:
                return d
        raise ValueError(f"{self.name} has no uplink data rate SF{sf}/{bw_hz // 1000} kHz")

    def sub_band(self, freq_hz: int) -> SubBand:
        for b in self.sub_bands:
            if b.contains(freq_hz):
                return b
        return SubBand(freq_hz, freq_hz, 1.0)

    def duty_cycle(self, freq_hz: int | None = None) -> float:
        """Duty cycle of the sub-band of ``freq_hz``; without a frequency the strictest
        duty cycle a device on the default channels is held to."""
        if freq_hz is not None:
            return self.sub_band(freq_hz).duty_cycle
        return min(self.sub_band(f).duty_cycle for f in self.channels)


def _eu868_drs(repeater_compatible: bool) -> tuple[DataRate, ...]:
    big = 222 if repeater_compatible else 242
    return (
        DataRate("EU868", 0, 12, 125_000, 51),
        DataRate("EU868", 1, 11, 125_000, 51),
        DataRate("EU868", 2, 10, 125_000, 51),
        DataRate("EU868", 3, 9, 125_000, 115),
        DataRate("EU868", 4, 8, 125_000, big),
        DataRate("EU868", 5, 7, 125_000, big),
        DataRate("EU868", 6, 7, 250_000, 222),
    )


_EU868_SUB_BANDS = (
    SubBand(863_000_000, 865_000_000, 0.001),
    SubBand(865_000_001, 868_000_000, 0.01),
    SubBand(868_000_001, 868_600_000, 0.01),
    SubBand(868_700_000, 869_200_000, 0.001),
    SubBand(869_400_000, 869_650_000, 0.10),
    SubBand(869_700_000, 870_000_000, 0.01),
)

EU868 = Region(
    name="EU868",
    data_rates=_eu868_drs(repeater_compatible=True),
    sub_bands=_EU868_SUB_BANDS,
    # the three join channels every EU868 device has, all in the 868.0-868.6 MHz 1 % band
    channels=(868_100_000, 868_300_000, 868_500_000),
    dwell_time_s=None,
)

US915 = Region(
    name="US915",
    data_rates=(
        DataRate("US915", 0, 10, 125_000, 11),
        DataRate("US915", 1, 9, 125_000, 53),
        DataRate("US915", 2, 8, 125_000, 125),
        DataRate("US915", 3, 7, 125_000, 242),
        DataRate("US915", 4, 8, 500_000, 242),
    ),
    sub_bands=(),
    # sub-band 2 (channels 8-15), the one TTS and most US networks use
    channels=tuple(902_300_000 + 200_000 * i for i in range(8, 16)),
    dwell_time_s=0.4,
)

REGIONS: dict[str, Region] = {"EU868": EU868, "US915": US915}


def region(name: str) -> Region:
    try:
        return REGIONS[name.upper()]
    except KeyError:
        raise ValueError(f"unknown region {name!r}; known: {', '.join(REGIONS)}") from None


def max_payload(region_name: str, dr_index: int) -> int:
    return region(region_name).dr(dr_index).max_payload


def time_on_air(
    sf: int,
    bw_hz: int,
    phy_payload_len: int,
    *,
    cr: int = 1,
    preamble: int = LORAWAN_PREAMBLE,
    explicit_header: bool = True,
    crc: bool = True,
    low_dr_optimize: bool | None = None,
) -> float:
    """Time on air in seconds per Semtech AN1200.13.

    ``cr`` is 1..4 for coding rates 4/5..4/8. ``low_dr_optimize`` defaults to on
    when the symbol time exceeds 16 ms (SF11 and SF12 at 125 kHz).
    """
    if not 6 <= sf <= 12:
        raise ValueError(f"spreading factor {sf} outside 6..12")
    if phy_payload_len < 0:
        raise ValueError("negative payload length")
    t_sym = (2**sf) / bw_hz
    de = (t_sym > 0.016) if low_dr_optimize is None else low_dr_optimize
    t_preamble = (preamble + 4.25) * t_sym
    ih = 0 if explicit_header else 1
    num = 8 * phy_payload_len - 4 * sf + 28 + 16 * int(crc) - 20 * ih
    n_payload = 8 + max(math.ceil(num / (4 * (sf - 2 * int(de)))) * (cr + 4), 0)
    return t_preamble + n_payload * t_sym


def off_time(airtime_s: float, duty_cycle: float) -> float:
    """How long a sub-band stays closed after a frame of ``airtime_s``: t/dc - t."""
    if duty_cycle >= 1.0:
        return 0.0
    return airtime_s / duty_cycle - airtime_s


_DR_NAME = re.compile(r"^SF(\d{1,2})BW(\d{3})\Z", re.IGNORECASE)


def parse_data_rate_name(name: str) -> tuple[int, int]:
    """``"SF9BW125"`` → ``(9, 125000)``."""
    m = _DR_NAME.match(name.strip())
    if not m:
        raise ValueError(f"data rate {name!r} is not of the form SF<7-12>BW<125|250|500>")
    sf, bw = int(m.group(1)), int(m.group(2))
    if not 6 <= sf <= 12 or bw not in (125, 250, 500):
        raise ValueError(f"data rate {name!r} is not a LoRa data rate")
    return sf, bw * 1000


def message_airtime(dr: DataRate, record_len: int, size: int | None = None) -> tuple[int, float]:
    """Fragments and total time on air (s) of a record of ``record_len`` bytes sent at
    ``dr`` with fragments of ``size`` bytes (default: the DR's N)."""
    from collector.core.wire import fragment_count, fragment_lengths

    s = size or dr.max_payload
    n = fragment_count(record_len, s)
    return n, sum(dr.time_on_air(length) for length in fragment_lengths(record_len, s))


def min_message_duration(dr: DataRate, fragments: int, size: int, duty_cycle: float) -> float:
    """Shortest time from the start of fragment 0 to the end of the last fragment
    of a message of ``fragments`` fragments of ``size`` bytes when the device obeys
    ``duty_cycle`` on a single sub-band (the pessimistic case for the collector)."""
    if fragments <= 1:
        return dr.time_on_air(size)
    t = dr.time_on_air(size)
    per_frame = t / duty_cycle if duty_cycle < 1.0 else t
    return (fragments - 1) * per_frame + t
