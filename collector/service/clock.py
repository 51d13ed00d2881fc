"""Clocks the service runs on.

The sans-IO core takes ``now`` as an argument; the service's shells get it from an
injected :class:`Clock`, which gives two readings:

- :meth:`Clock.now`, the *service time*: Unix seconds that advance with a monotonic
  clock. Message deadlines, retry times and backoff, the circuit breaker, a
  document's maximum age and the retention all run on it, so a step of the wall
  clock (an NTP correction, an operator's ``date -s``, a virtual machine resumed)
  neither closes half-received messages early, nor stalls delivery, nor ages
  documents into dead letters. :class:`SystemClock` starts it at the wall time when
  the service starts, so times stored by one run compare with the next run's;
- :meth:`Clock.wall`, the wall clock, for the time stamps the collector puts on data
  that leaves it: the receive time of an uplink whose body carries none, and the
  reading of an HTTP-date ``Retry-After``.

:class:`SystemClock` follows the machine's clocks; :class:`ManualClock` only moves
when told to (tests, and scenarios that run the service in virtual time through
``POST /admin/clock``), and its wall clock can be stepped on its own.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import time
from collections.abc import Callable
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Service time, Unix seconds: moves with a monotonic clock, never steps."""
        ...

    def wall(self) -> float:
        """The wall clock, Unix seconds (time stamps only: it may step either way)."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Return once ``now() >= t``."""
        ...


class SystemClock:
    """Service time from ``time.monotonic`` (started at the wall time of the clock's
    creation), wall time from ``time.time``. Both sources can be given, e.g. to
    step a wall clock in a test."""

    def __init__(self, wall: Callable[[], float] = time.time, monotonic: Callable[[], float] = time.monotonic):
        self._wall = wall
        self._monotonic = monotonic
        self._origin = wall() - monotonic()

    def now(self) -> float:
        return self._monotonic() + self._origin

    def wall(self) -> float:
        return self._wall()

    async def sleep_until(self, t: float) -> None:
        while True:
            delay = t - self.now()
            if delay <= 0:
                return
            await asyncio.sleep(min(delay, 60.0))


class ManualClock:
    """A clock that stands still until :meth:`set` or :meth:`advance` moves it.

    Time never goes backwards: setting an earlier time is an error. Its wall clock
    moves with it and can in addition be stepped either way (:meth:`step_wall`), as a
    machine's wall clock can; the service time does not follow such a step.
    """

    def __init__(self, start: float = 0.0):
        self._now = float(start)
        #: wall clock minus service time (changed only by :meth:`step_wall`)
        self._wall_offset = 0.0
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def wall(self) -> float:
        return self._now + self._wall_offset

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock alone, forwards or back."""
        seconds = float(seconds)
        if not math.isfinite(seconds):
            raise ValueError("the step must be a finite number of seconds")
        self._wall_offset += seconds

    def set(self, t: float) -> None:
        t = float(t)
        if not math.isfinite(t):
            raise ValueError("the time must be a finite number of seconds")
        if t < self._now:
            raise ValueError(f"the clock cannot go back from {self._now} to {t}")
        self._now = t
        while self._sleepers and self._sleepers[0][0] <= t:
            _, _, fut = heapq.heappop(self._sleepers)
            if not fut.done():
                fut.set_result(None)

    def advance(self, seconds: float) -> None:
        self.set(self._now + seconds)

    async def sleep_until(self, t: float) -> None:
        if t <= self._now:
            return
        fut = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (t, next(self._seq), fut))
        await fut


def make_clock(kind: str, start: float | None = None) -> Clock:
    """``"system"`` or ``"manual"`` (starting at ``start``, default the current wall time)."""
    if kind == "system":
        return SystemClock()
    if kind == "manual":
        return ManualClock(time.time() if start is None else start)
    raise ValueError(f"unknown clock {kind!r}; use 'system' or 'manual'")


async def wait_first(awaitables: list, timeout: float | None = None) -> None:
    """Wait until the first of ``awaitables`` finishes (or ``timeout`` wall seconds),
    then cancel the others - also when the waiter itself is cancelled."""
    tasks = [asyncio.ensure_future(a) for a in awaitables]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for t in tasks:
            if not t.done():
                t.cancel()
