"""RFC 3339 time stamps, as network servers send them and the document writes them.

Times inside the project are Unix milliseconds (int) for network-server receive
times and float seconds for clocks; both are UTC.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import lru_cache

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,12}))?(Z|z|[+-]\d{2}:\d{2})\Z"
)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
#: receive times the collector takes from a network server: from the Unix epoch to the
#: end of year 9999 (what the document's four-digit years can write). Anything before
#: is an unset time - Go's zero time ``0001-01-01T00:00:00Z`` is what a Go network
#: server sends for one.
RECEIVE_MIN_MS = 0
RECEIVE_MAX_MS = 253_402_300_799_999


class TimeOutOfRange(ValueError, OverflowError):
    """A time stamp whose offset moves it before year 1 or past 9999: a ValueError
    for whoever refuses bad input, an OverflowError for :func:`receive_ms`."""


def parse_ms(text: str) -> int:
    """Parse an RFC 3339 time stamp (any number of fraction digits, ``Z`` or an
    offset) into Unix milliseconds, truncating below the millisecond.

    The pattern decides what is accepted (``datetime.fromisoformat`` also takes ISO 8601
    shapes RFC 3339 does not: ``20261124T060001Z``, a date alone, no seconds);
    ``fromisoformat`` computes the value (it reads up to six fraction digits and
    ignores the rest, which truncation below the millisecond does not need). A
    leap second (``:60``) or a lower-case ``t``/``z``, which it refuses, is read as
    the last second of its minute by hand."""
    if not isinstance(text, str):
        raise ValueError(f"time stamp must be a string, got {type(text).__name__}")
    text = text.strip()
    m = _RFC3339.match(text)
    if not m:
        raise ValueError(f"{text!r} is not an RFC 3339 time stamp")
    try:
        return (datetime.fromisoformat(text) - _EPOCH) // _MS
    except ValueError:
        pass
    y, mo, d, h, mi, s, frac, tz = m.groups()
    try:
        dt = datetime(int(y), int(mo), int(d), int(h), int(mi), min(int(s), 59), tzinfo=UTC)
    except ValueError as e:
        raise ValueError(f"{text!r} is not a valid date/time: {e}") from None
    if tz not in ("Z", "z"):
        sign = 1 if tz[0] == "+" else -1
        try:
            dt -= sign * timedelta(hours=int(tz[1:3]), minutes=int(tz[4:6]))
        except OverflowError:  # the offset moves it before year 1 or past 9999
            raise TimeOutOfRange(f"{text!r} is outside the years 1..9999 in UTC") from None
    ms = (dt - _EPOCH) // _MS
    if frac:
        ms += int((frac + "00")[:3])
    return ms


def receive_ms(text: str) -> int | None:
    """A network server's receive time: Unix milliseconds, or None when the time
    lies outside :data:`RECEIVE_MIN_MS` .. :data:`RECEIVE_MAX_MS` (an unset time,
    or one an offset moves past year 9999): the collector then uses its own receive
    time. Raises ValueError for text that is not an RFC 3339 time stamp.

    The one place that decides which receive times the collector takes."""
    try:
        ms = parse_ms(text)
    except OverflowError:  # an offset moved it past year 1 or 9999
        return None
    return ms if RECEIVE_MIN_MS <= ms <= RECEIVE_MAX_MS else None


@lru_cache(maxsize=256)
def _date_prefix(day: int) -> str:
    """``2026-11-24T`` for a day number since the epoch (documents of a run share a few)."""
    return (_EPOCH + timedelta(days=day)).date().isoformat() + "T"


def format_ms(ms: int) -> str:
    """Unix milliseconds → ``2026-11-24T06:00:01.120Z``."""
    day, rest = divmod(ms, 86_400_000)
    h, rest = divmod(rest, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, frac = divmod(rest, 1000)
    return "%s%02d:%02d:%02d.%03dZ" % (_date_prefix(day), h, m, s, frac)  # noqa: UP031 (fast)


def format_s(seconds: int) -> str:
    """Unix seconds → ``2026-11-24T00:00:00Z`` (whole seconds)."""
    day, rest = divmod(seconds, 86_400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    return "%s%02d:%02d:%02dZ" % (_date_prefix(day), h, m, s)  # noqa: UP031 (fast)


def format_ns(ns: int) -> str:
    """Unix nanoseconds → ``2026-11-24T06:00:01.204773143Z`` (as The Things Stack writes)."""
    dt = _EPOCH + timedelta(seconds=ns // 1_000_000_000)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ns % 1_000_000_000:09d}Z"
