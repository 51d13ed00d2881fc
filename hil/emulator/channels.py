"""The uplink channels an emulated module holds, and which of them are enabled.

EU868: 16 channel slots, the three default channels (868.1, 868.3, 868.5 MHz, DR0-5)
in slots 0-2. US915: the fixed plan of 72 channels, 64 of 125 kHz (902.3 MHz +
200 kHz × n, DR0-3) and 8 of 500 kHz (903.0 MHz + 1.6 MHz × (n - 64), DR4); sub-band
``b`` (1-8) is channels 8(b-1) .. 8(b-1)+7 plus the 500 kHz channel 63+b.
"""

from __future__ import annotations

from collector.core import lorawan

US915_CHANNELS = 72
EU868_CHANNELS = 16
#: the RN2483's default duty-cycle setting of the three default channels (0.33 %)
EU868_DEFAULT_DCYCLE = 302


def us915_frequency(ch: int) -> int:
    return 902_300_000 + 200_000 * ch if ch < 64 else 903_000_000 + 1_600_000 * (ch - 64)


def sub_band_channels(band: int) -> set[int]:
    """The channels of US915 sub-band ``band`` (1-8)."""
    if not 1 <= band <= 8:
        raise ValueError(f"US915 sub-band {band} outside 1..8")
    return set(range(8 * (band - 1), 8 * band)) | {63 + band}


def sub_band_frequencies(band: int) -> set[int]:
    """The frequencies (Hz) of US915 sub-band ``band``."""
    return {us915_frequency(ch) for ch in sub_band_channels(band)}


class ChannelPlan:
    """Channel slots of one module: frequency, DR range, on/off."""

    def __init__(self, region: lorawan.Region, sub_band: int | None = None):
        self.region = region
        self.us = region.name == "US915"
        self.count = US915_CHANNELS if self.us else EU868_CHANNELS
        self.freqs: dict[int, int] = {}
        self.on: set[int] = set()
        self.reset(sub_band)

    def reset(self, sub_band: int | None = None) -> None:
        """The defaults; US915 with every channel on, or only ``sub_band``'s."""
        if self.us:
            self.freqs = {ch: us915_frequency(ch) for ch in range(US915_CHANNELS)}
            self.on = sub_band_channels(sub_band) if sub_band else set(range(US915_CHANNELS))
        else:
            self.freqs = dict(enumerate(self.region.channels))
            self.on = set(self.freqs)

    def valid(self, ch: int) -> bool:
        return 0 <= ch < self.count

    def frequency(self, ch: int) -> int:
        return self.freqs.get(ch, 0)

    def dr_range(self, ch: int) -> tuple[int, int]:
        if self.us:
            return (4, 4) if ch >= 64 else (0, 3)
        return (0, 5)

    def dcycle(self, ch: int) -> int:
        return EU868_DEFAULT_DCYCLE if ch in self.freqs else 0

    def set_status(self, ch: int, on: bool) -> bool:
        """Switch ``ch``; False when it has no frequency (EU868 slot not defined)."""
        if not self.valid(ch) or ch not in self.freqs:
            return False
        (self.on.add if on else self.on.discard)(ch)
        return True

    def candidates(self, dr: int) -> list[int]:
        """Frequencies of the enabled channels that carry ``dr``, in channel order."""
        out = []
        for ch in sorted(self.on):
            lo, hi = self.dr_range(ch)
            if lo <= dr <= hi and self.freqs.get(ch):
                out.append(self.freqs[ch])
        return out

    # -- RUI3's AT+MASK: one bit per US915 sub-band (bit 0 = sub-band 1)

    def mask(self) -> int:
        return sum(1 << (b - 1) for b in range(1, 9) if sub_band_channels(b) & self.on)

    def set_mask(self, mask: int) -> None:
        self.on = set().union(*(sub_band_channels(b) for b in range(1, 9) if mask >> (b - 1) & 1))
