"""The tools' one progress bar: redrawn on a terminal, a line per tenth elsewhere."""

from __future__ import annotations

import io

from collector.testing.progress import ProgressBar


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_into_a_file_one_line_per_tenth():
    out = io.StringIO()
    with ProgressBar("run", stream=out) as bar:
        for i in range(101):
            bar(i / 100, f"{i}/100")
    lines = out.getvalue().splitlines()
    assert len(lines) == 11 and "\r" not in out.getvalue()
    assert lines[0].startswith("run   0%") and lines[-1].startswith("run 100%") and lines[-1].endswith("100/100")


def test_on_a_terminal_one_line_redrawn():
    out = Terminal()
    with ProgressBar("run", stream=out, width=10) as bar:
        for i in range(11):
            bar(i / 10)
    text = out.getvalue()
    assert text.count("\r") == 11 and text.endswith("\n") and text.count("\n") == 1
    assert "[##########] 100%" in text.split("\r")[-1]


def test_disabled_prints_nothing():
    out = Terminal()
    with ProgressBar("run", enabled=False, stream=out) as bar:
        bar(0.5, "half")
    assert out.getvalue() == ""
