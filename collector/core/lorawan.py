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

    def time_on_air(self, app_payload_len: int, *, downlink: bool = False) -> float:
        """Seconds on air of an uplink (or, with ``downlink``, a downlink: no payload
        CRC) carrying ``app_payload_len`` FRMPayload bytes."""
        return time_on_air(self.sf, self.bw_hz, app_payload_len + PHY_OVERHEAD, crc=not downlink)


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
    #: default 500 kHz uplink channels (Hz) of the sub-band (US915, AU915)
    wide_channels: tuple[int, ...] = ()
    #: Class A downlinks: RX1 channels (empty: the uplink's own frequency; else the
    #: uplink channel's number modulo their count picks one), the RX1 data rate of
    #: uplink DR d at offset 0 is ``min(rx1_dr_max, rx1_dr_base + d)``, never below
    #: ``rx1_dr_min`` (the offset is subtracted before that floor)
    downlink_channels: tuple[int, ...] = ()
    rx1_dr_base: int = 0
    rx1_dr_min: int = 0
    rx1_dr_max: int = 15
    rx2_frequency_hz: int = 0
    rx2_dr: int = 0
    #: data rates only downlinks use (US915 and AU915 DR8-13)
    downlink_rates: tuple[DataRate, ...] = ()

    def dr(self, index: int) -> DataRate:
        for d in self.data_rates:
            if d.index == index:
                return d
        raise ValueError(f"{self.name} has no uplink data rate DR{index}")

    def downlink_dr(self, index: int) -> DataRate:
        for d in self.downlink_rates + self.data_rates:
            if d.index == index:
                return d
        raise ValueError(f"{self.name} has no downlink data rate DR{index}")

    def uplink_channels(self, bw_hz: int) -> tuple[int, ...]:
        """The default uplink channels of a data rate of ``bw_hz``."""
        return self.wide_channels if bw_hz == 500_000 and self.wide_channels else self.channels

    def rx1(self, uplink_dr: int, uplink_freq_hz: int, offset: int = 0) -> tuple[int, DataRate]:
        """(frequency, data rate) of RX1 after an uplink at ``uplink_dr`` on ``uplink_freq_hz``."""
        d = max(self.rx1_dr_min, min(self.rx1_dr_max, self.rx1_dr_base + uplink_dr) - offset)
        if not self.downlink_channels:
            return uplink_freq_hz, self.downlink_dr(d)
        n = _channel_number(self, uplink_freq_hz)
        return self.downlink_channels[n % len(self.downlink_channels)], self.downlink_dr(d)

    def rx2(self) -> tuple[int, DataRate]:
        """(frequency, data rate) of RX2 by the region's default."""
        return self.rx2_frequency_hz, self.downlink_dr(self.rx2_dr)

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
        DataRate("EU868", 6, 7, 250_000, big),
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
    rx2_frequency_hz=869_525_000,
)

def _channel_number(reg: Region, freq_hz: int) -> int:
    """The uplink channel number of ``freq_hz`` in a US915/AU915-style plan."""
    first, first_wide = (902_300_000, 903_000_000) if reg.name == "US915" else (915_200_000, 915_900_000)
    if (freq_hz - first_wide) % 1_600_000 == 0 and freq_hz >= first_wide and freq_hz in reg.wide_channels:
        return 64 + (freq_hz - first_wide) // 1_600_000
    return (freq_hz - first) // 200_000


def _wide_rates(region: str) -> tuple[DataRate, ...]:
    """DR8-13, SF12..SF7 at 500 kHz, the downlink data rates of US915 and AU915."""
    return tuple(DataRate(region, 8 + i, 12 - i, 500_000, (53, 129, 242, 242, 242, 242)[i]) for i in range(6))


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
    # sub-band 2 (channels 8-15 and 500 kHz channel 65), the one TTS and most US networks use
    channels=tuple(902_300_000 + 200_000 * i for i in range(8, 16)),
    dwell_time_s=0.4,
    wide_channels=(903_000_000 + 1_600_000 * 1,),
    downlink_channels=tuple(923_300_000 + 600_000 * i for i in range(8)),
    rx1_dr_base=10, rx1_dr_min=8, rx1_dr_max=13,
    rx2_frequency_hz=923_300_000, rx2_dr=8,
    downlink_rates=_wide_rates("US915"),
)

# AU915 (RP002): DR0-5 SF12..SF7/125 kHz, DR6 SF8/500 kHz; a device starts with the
# 400 ms uplink dwell time (RP002 1.0.3 2.6.2), which leaves DR2-6 (N as US915's table)
AU915 = Region(
    name="AU915",
    data_rates=(
        DataRate("AU915", 2, 10, 125_000, 11),
        DataRate("AU915", 3, 9, 125_000, 53),
        DataRate("AU915", 4, 8, 125_000, 125),
        DataRate("AU915", 5, 7, 125_000, 242),
        DataRate("AU915", 6, 8, 500_000, 242),
    ),
    sub_bands=(),
    # sub-band 2 (channels 8-15 and 500 kHz channel 65), as The Things Network uses it
    channels=tuple(915_200_000 + 200_000 * i for i in range(8, 16)),
    dwell_time_s=0.4,
    wide_channels=(915_900_000 + 1_600_000 * 1,),
    downlink_channels=tuple(923_300_000 + 600_000 * i for i in range(8)),
    rx1_dr_base=8, rx1_dr_min=8, rx1_dr_max=13,
    rx2_frequency_hz=923_300_000, rx2_dr=8,
    downlink_rates=_wide_rates("AU915"),
)


def _as923(group: int, offset_hz: int) -> Region:
    """AS923 group ``group`` (RP002 2.8): default channels 923.2 and 923.4 MHz shifted by
    ``offset_hz``; with the 400 ms dwell time (uplink and downlink) DR2-6 remain
    (repeater-compatible N: 11, 53, 125, 222, 222) and RX1 never goes below DR2."""
    name = f"AS923-{group}"
    return Region(
        name=name,
        data_rates=(
            DataRate(name, 2, 10, 125_000, 11),
            DataRate(name, 3, 9, 125_000, 53),
            DataRate(name, 4, 8, 125_000, 125),
            DataRate(name, 5, 7, 125_000, 222),
            DataRate(name, 6, 7, 250_000, 222),
        ),
        sub_bands=(),
        channels=(923_200_000 + offset_hz, 923_400_000 + offset_hz),
        dwell_time_s=0.4,
        rx1_dr_min=2, rx1_dr_max=6,
        rx2_frequency_hz=923_200_000 + offset_hz, rx2_dr=2,
    )


AS923_1 = _as923(1, 0)
AS923_2 = _as923(2, -1_800_000)
AS923_3 = _as923(3, -6_600_000)
AS923_4 = _as923(4, -5_900_000)

REGIONS: dict[str, Region] = {
    "EU868": EU868, "US915": US915, "AU915": AU915,
    "AS923-1": AS923_1, "AS923-2": AS923_2, "AS923-3": AS923_3, "AS923-4": AS923_4,
}
#: other names of the same regions
ALIASES = {"AS923": "AS923-1"}


def region(name: str) -> Region:
    try:
        key = name.upper()
        return REGIONS[ALIASES.get(key, key)]
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


def min_message_duration(dr: DataRate, fragments: int, size: int, duty_cycle: float,
                         last: int | None = None) -> float:
    """Shortest time from the start of fragment 0 to the end of the last fragment
    of a message of ``fragments`` fragments of ``size`` bytes when the device obeys
    ``duty_cycle`` on a single sub-band (the pessimistic case for the collector).
    ``last`` is the last fragment's length when known (default: ``size``, as a
    collector that has not seen it must assume)."""
    t_last = dr.time_on_air(size if last is None else last)
    if fragments <= 1:
        return t_last
    t = dr.time_on_air(size)
    per_frame = t / duty_cycle if duty_cycle < 1.0 else t
    return (fragments - 1) * per_frame + t_last
