"""The one progress bar of the command-line tools (``devicesim run``, ``scenarios
run``, ``hil send-records``).

On a terminal it redraws one line on standard error; into a file or a pipe it writes
a plain line at every tenth instead, so logs stay readable.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


class ProgressBar:
    """``bar(fraction, text)`` as work proceeds (``fraction`` 0..1), ``bar.done()`` at
    the end (or use it as a context manager). Disabled, it prints nothing."""

    def __init__(self, label: str, enabled: bool = True, width: int = 30, stream: TextIO | None = None):
        self.label = label
        self.enabled = enabled
        self.width = width
        self.stream = stream
        self.t0 = time.monotonic()
        self.last = ""
        self.tty = self._out().isatty()
        self.tenth = -1

    def _out(self) -> TextIO:
        return self.stream if self.stream is not None else sys.stderr

    def __call__(self, frac: float, text: str = "") -> None:
        if not self.enabled:
            return
        out = self._out()
        frac = min(1.0, max(0.0, frac))
        if not self.tty:  # a log file: one line per tenth, no carriage returns
            tenth = int(frac * 10)
            if tenth > self.tenth:
                self.tenth = tenth
                out.write(f"{self.label} {frac:4.0%} {time.monotonic() - self.t0:5.1f}s {text}".rstrip() + "\n")
                out.flush()
            return
        n = int(frac * self.width)
        line = (f"\r{self.label:<28.28} [{'#' * n}{'.' * (self.width - n)}] {frac:4.0%} "
                f"{time.monotonic() - self.t0:5.1f}s {text:<22.22}")
        if line != self.last:
            out.write(line)
            out.flush()
            self.last = line

    def done(self) -> None:
        if self.enabled and self.tty and self.last:
            self._out().write("\n")
            self._out().flush()

    def __enter__(self) -> ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.done()
