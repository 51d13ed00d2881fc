"""``hil`` logs in the project's one format: ``ts=... level=... logger=... key=value``."""

from __future__ import annotations

import re
import select
import subprocess
import sys

LINE = re.compile(r"^ts=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=info logger=hil\.cli event=emulating ")


def test_hil_logs_key_value_lines():
    proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "--log-level", "info", "emulate", "rn2483", "--speed", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready, _, _ = select.select([proc.stderr], [], [], 15)
        assert ready, "hil emulate logged nothing"
        line = proc.stderr.readline()
        assert LINE.match(line), line
    finally:
        proc.terminate()
        proc.wait(10)
