"""The shell that runs a module model on a real pseudo-terminal (raw mode, a
background thread, a heap of scheduled outputs), and the in-process air that carries
point-to-point frames between emulators (:mod:`hil.emulator.air` carries them
between processes)."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import pty
import select
import threading
import time
import tty
from collections.abc import Callable

from hil.emulator.core import ModuleModel, Out

log = logging.getLogger("hil.emulator")


class Air:
    """The shared medium for point-to-point (``radio tx``/``radio rx``) frames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: list[PtyEmulator] = []

    def attach(self, emu: PtyEmulator) -> None:
        with self._lock:
            self._members.append(emu)

    def detach(self, emu: PtyEmulator) -> None:
        with self._lock:
            if emu in self._members:
                self._members.remove(emu)

    def broadcast(self, sender: ModuleModel, sf: int, payload: bytes) -> None:
        with self._lock:
            members = list(self._members)
        for emu in members:
            if emu.model is not sender:
                emu.post(lambda now, m=emu.model: m.on_air(sf, payload, now))


class PtyEmulator:
    """Runs a :class:`ModuleModel` on the far end of a pseudo-terminal."""

    def __init__(self, model: ModuleModel, *, clock: Callable[[], float] = time.monotonic, air: Air | None = None):
        self.model = model
        self.clock = clock
        self.air = air
        model.air = air
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._heap: list[tuple[float, int, Out]] = []
        self._seq = itertools.count()
        self._posted: list[Callable[[float], list[Out]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"emulator {self.path}", daemon=True)
        self.commands: list[str] = []

    def start(self) -> PtyEmulator:
        if self.air is not None:
            self.air.attach(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.air is not None:
            self.air.detach(self)
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def post(self, fn: Callable[[float], list[Out]]) -> None:
        """Run ``fn(now)`` in the emulator thread and schedule what it returns."""
        with self._lock:
            self._posted.append(fn)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"p")

    def write_now(self, data: bytes) -> None:
        """Put raw bytes on the line (unsolicited output), from any thread."""
        self.post(lambda now: [Out(now, data, epoch=self.model.epoch)])

    def _schedule(self, outs: list[Out]) -> None:
        for o in outs:
            heapq.heappush(self._heap, (o.at, next(self._seq), o))

    def _write(self, data: bytes) -> None:
        """Write to the line; what does not fit (nobody reads the port) is lost, as
        on a UART, instead of blocking the module."""
        chunks = [data[i : i + 1] for i in range(len(data))] if self.model.split_writes else [data]
        for chunk in chunks:
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(self._master, view):]
            except BlockingIOError:
                log.warning("event=output_dropped path=%s bytes=%d", self.path, len(view))
                return
            except OSError:
                return
            if self.model.split_writes:
                time.sleep(0.002)

    def _run(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                _, _, o = heapq.heappop(self._heap)
                if o.epoch != self.model.epoch:
                    continue
                if o.data:
                    self._write(o.data)
                if o.action is not None:
                    self._schedule(o.action(now))
            with self._lock:
                posted, self._posted = self._posted, []
            for fn in posted:
                self._schedule(fn(now))
            if posted:
                continue
            timeout = max(0.0, self._heap[0][0] - self.clock()) if self._heap else 0.5
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:  # includes BlockingIOError
                    data = b""
                buf += data
                while (idx := buf.find(b"\r\n")) >= 0:
                    raw = bytes(buf[:idx]).lstrip(b"\x00\x55")
                    del buf[: idx + 2]
                    text = raw.decode("ascii", errors="replace")
                    self.commands.append(text)
                    log.debug("event=command path=%s line=%r", self.path, text)
                    self._schedule(self.model.handle(text, self.clock()))
