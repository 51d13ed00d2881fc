"""Clocks the service runs on.

The sans-IO core takes ``now`` as an argument; the service's shells get it from an
injected :class:`Clock`. :class:`SystemClock` follows the wall clock;
:class:`ManualClock` only moves when told to (tests, and scenarios that run the
service in virtual time through ``POST /admin/clock``).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Current time, Unix seconds."""
        ...

    async def sleep_until(self, t: float) -> None:
        """Return once ``now() >= t``."""
        ...


class SystemClock:
    """The wall clock (``time.time``)."""

    def now(self) -> float:
        return time.time()

    async def sleep_until(self, t: float) -> None:
        while True:
            delay = t - time.time()
            if delay <= 0:
                return
            # sleep in bounded steps so a wall-clock step does not strand a sleeper
            await asyncio.sleep(min(delay, 60.0))


class ManualClock:
    """A clock that stands still until :meth:`set` or :meth:`advance` moves it.

    Time never goes backwards: setting an earlier time is an error.
    """

    def __init__(self, start: float = 0.0):
        self._now = float(start)
        self._sleepers: list[tuple[float, int, asyncio.Future]] = []
        self._seq = itertools.count()

    def now(self) -> float:
        return self._now

    def set(self, t: float) -> None:
        t = float(t)
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
