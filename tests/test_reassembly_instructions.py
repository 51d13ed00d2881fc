"""reports/reassembly_instructions.py: bad arguments are a one-line error, and the
rounds it has valgrind count run the benchmark's own workload."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("reassembly_instructions", ROOT / "reports" / "reassembly_instructions.py")
ri = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ri)


def test_no_rounds_is_a_one_line_error(capsys):
    assert ri.main(["--rounds", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("reassembly_instructions: ") and err.count("\n") == 1


def test_the_counted_rounds_reassemble_every_message():
    ri.main(["--inner", "--rounds", "1", "--which", "pipeline"])  # asserts BATCH documents a round
