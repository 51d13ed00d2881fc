"""The thin serial shell: a buffered reader that splits on ``\\r\\n``, exact reply
matching with one deadline per reply phase, and a flush of stale input before each
command that keeps unsolicited lines (downlinks, events)."""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable, Collection

import serial

from hil.drivers.results import ModemError, ModemTimeout

log = logging.getLogger("hil.modem")

Clock = Callable[[], float]


# --------------------------------------------------------------------------- serial shell


def open_port(url: str, baudrate: int) -> serial.SerialBase:
    """Open ``url`` with :func:`serial.serial_for_url`; exclusive access for device paths."""
    kwargs: dict = {"baudrate": baudrate, "timeout": 0.02, "write_timeout": 2.0}
    if "://" not in url:
        kwargs["exclusive"] = True
    try:
        return serial.serial_for_url(url, **kwargs)
    except (serial.SerialException, OSError, ValueError) as e:
        raise ModemError(f"cannot open serial port {url}: {e}") from None


class SerialLink:
    """Line I/O on a serial port with per-phase deadlines.

    ``is_unsolicited(line)`` says which lines are kept in :attr:`unsolicited` when
    they turn up outside the reply being waited for (downlinks, ``+EVT:`` events).
    """

    def __init__(
        self,
        port: serial.SerialBase,
        *,
        is_unsolicited: Callable[[str], bool] = lambda line: False,
        clock: Clock = time.monotonic,
        name: str = "",
    ):
        self.port = port
        self.is_unsolicited = is_unsolicited
        self.clock = clock
        self.name = name or getattr(port, "port", "") or "port"
        self._buf = bytearray()
        self.unsolicited: deque[str] = deque(maxlen=1000)
        #: lines that were neither the awaited reply nor unsolicited (diagnostics)
        self.ignored: deque[str] = deque(maxlen=100)

    # -- reading

    def _fill(self, wait: bool = True) -> None:
        """Append what the port has to the buffer: with ``wait``, the next byte (up to
        the port's read timeout) and what came with it; else only what is waiting."""
        try:
            data = self.port.read(1) if wait else b""
            if data or not wait:
                waiting = self.port.in_waiting
                if waiting:
                    data += self.port.read(waiting)
        except (serial.SerialException, OSError) as e:
            raise ModemError(f"serial port {self.name} failed: {e}") from None
        self._buf += data

    def _pop_line(self) -> str | None:
        idx = self._buf.find(b"\r\n")
        if idx < 0:
            return None
        raw = bytes(self._buf[:idx])
        del self._buf[: idx + 2]
        return raw.decode("ascii", errors="replace")

    def read_line(self, deadline: float) -> str | None:
        """The next complete line, or None when ``deadline`` (clock time) passes."""
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            if self.clock() >= deadline:
                return None
            self._fill()

    def _keep_or_ignore(self, line: str, context: str) -> None:
        if self.is_unsolicited(line):
            log.info("event=unsolicited port=%s line=%r", self.name, line)
            self.unsolicited.append(line)
        else:
            log.info("event=ignored port=%s while=%r line=%r", self.name, context, line)
            self.ignored.append(line)

    def flush(self) -> None:
        """Drain input that arrived before the next command: keep unsolicited lines,
        drop the rest (and any partial line) so it cannot answer the wrong command."""
        self._fill(wait=False)
        while (line := self._pop_line()) is not None:
            self._keep_or_ignore(line, "flush")
        if self._buf:
            log.info("event=partial_dropped port=%s bytes=%r", self.name, bytes(self._buf))
            self._buf.clear()

    def wait(self, accept: Callable[[str], bool] | Collection[str], timeout: float, context: str) -> str:
        """The first line ``accept`` takes (a predicate or a set of exact lines) within
        ``timeout`` seconds; other lines are kept (unsolicited) or ignored."""
        pred = accept if callable(accept) else accept.__contains__
        deadline = self.clock() + timeout
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise ModemTimeout(f"no reply to {context!r} within {timeout:g} s on {self.name}")
            if pred(line):
                log.debug("event=reply port=%s to=%r line=%r", self.name, context, line)
                return line
            self._keep_or_ignore(line, context)

    # -- writing

    def write_line(self, text: str) -> None:
        log.debug("event=send port=%s line=%r", self.name, text)
        self.write_raw(text.encode("ascii") + b"\r\n")

    def command(self, text: str, accept: Callable[[str], bool] | Collection[str], timeout: float) -> str:
        """Flush stale input, send ``text``, return its (first) reply."""
        self.flush()
        self.write_line(text)
        return self.wait(accept, timeout, text)

    def write_raw(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            raise ModemError(f"cannot write to serial port {self.name}: {e}") from None

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.close()
