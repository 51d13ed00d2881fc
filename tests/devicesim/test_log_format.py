"""``devicesim run`` logs in the project's one format (``ts=... level=... logger=...``)."""

from __future__ import annotations

import re

from click.testing import CliRunner

from devicesim.cli import main


def test_run_ends_with_a_key_value_log_line():
    r = CliRunner().invoke(main, ["run", "--devices", "1", "--hours", "1", "--quiet"])
    assert r.exit_code == 0, r.output
    line = r.stderr.strip().splitlines()[-1]
    assert re.match(r"^ts=\S+Z level=info logger=devicesim event=done devices=1 hours=1.0 seed=1 .* trace=None ",
                    line), line
