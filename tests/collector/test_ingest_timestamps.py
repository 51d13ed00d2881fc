"""The ingest path's fast reading of UTC time stamps agrees with timefmt.parse_ms."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from collector.core.ingest import _utc_ms
from collector.core.timefmt import parse_ms


@given(st.integers(0, 10_000), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61),
       st.integers(0, 61), st.one_of(st.just(""), st.from_regex(r"\A\.[0-9]{1,12}\Z")))
def test_fast_path_equals_parse_ms_or_leaves_it_to_parse_ms(y, mo, d, h, mi, s, frac):
    text = f"{y:04d}-{mo:02d}-{d:02d}T{h:02d}:{mi:02d}:{s:02d}{frac}Z"
    fast = _utc_ms(text)
    if fast is not None:
        assert fast == parse_ms(text)


def test_leap_days_and_other_shapes():
    assert _utc_ms("2024-02-29T23:59:59.999999999Z") == parse_ms("2024-02-29T23:59:59.999999999Z")
    assert _utc_ms("2000-02-29T00:00:00Z") == parse_ms("2000-02-29T00:00:00Z")
    assert _utc_ms("1900-02-29T00:00:00Z") is None  # not a leap year: parse_ms says why
    assert _utc_ms("1969-12-31T23:59:59.5Z") == parse_ms("1969-12-31T23:59:59.5Z") == -500
    for other in ("2026-11-24T06:00:01+01:00", " 2026-11-24T06:00:01Z", "2026-11-24 06:00:01Z",
                  "2026-11-24T06:00:60Z"):
        assert _utc_ms(other) is None
