"""RFC 3339 time stamps both ways."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from collector.core.timefmt import format_ms, format_s, parse_ms


@given(st.integers(-10**12, 2**32 * 1000))
def test_formatting_agrees_with_datetime_and_parses_back(ms):
    dt = datetime.fromtimestamp(ms / 1000, UTC).replace(microsecond=(ms % 1000) * 1000)
    assert format_ms(ms) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"
    assert parse_ms(format_ms(ms)) == ms
    assert format_s(ms // 1000) == dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_fractions_are_truncated_and_offsets_applied():
    assert format_ms(parse_ms("2026-11-24T06:00:01.204773143Z")) == "2026-11-24T06:00:01.204Z"
    assert format_ms(parse_ms("2026-11-24T07:00:01.1+01:00")) == "2026-11-24T06:00:01.100Z"
