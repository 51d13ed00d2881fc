"""Shared strategies and helpers for the collector's tests."""

from __future__ import annotations

from hypothesis import strategies as st

from collector.core import wire

i8 = st.integers(-128, 127)
u8 = st.integers(0, 255)
i16 = st.integers(-32768, 32767)
u16 = st.integers(0, 65535)
i32 = st.integers(-(2**31), 2**31 - 1)
u32 = st.integers(0, 2**32 - 1)


@st.composite
def records(draw, max_samples: int = 40) -> wire.Record:
    """Any valid schema-1 record."""
    c = draw(st.integers(1, 4))
    k = draw(st.integers(1, max_samples))
    channels = [
        wire.Channel(draw(st.integers(0, 15)), draw(st.integers(-6, 6)), draw(st.lists(i16, min_size=k, max_size=k)))
        for _ in range(c)
    ]
    maybe = lambda s: draw(st.one_of(st.none(), s))  # noqa: E731
    return wire.Record(
        device_serial=draw(u32), record_seq=draw(u16), start_time=draw(u32), interval_s=draw(st.integers(1, 65535)),
        channels=channels, flags=draw(u8), fw_major=draw(u8), fw_minor=draw(u8), battery_mv=draw(u16),
        temp_centi=draw(i16),
        location=maybe(st.builds(wire.Location, i32, i32, i16, u8, u8)),
        diagnostics=maybe(st.builds(wire.Diagnostics, u32, u16, u8, u16, i16, i8, u8, u8, u16)),
        config=maybe(st.builds(wire.Config, u16, u8, u8, i16, i16)),
        site=maybe(st.binary(min_size=16, max_size=16).map(wire.Site)),
    )


def sizes_for(record_len: int):
    """Fragment sizes at which a record fits in 255 fragments."""
    return st.integers(4, 242).filter(lambda s: wire.fragment_count(record_len, s) <= 255)
