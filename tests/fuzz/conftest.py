"""Shared helpers of the fuzz tests: :func:`reassemble_hostile` from hostile.py (a
plain file, because fuzz_decoders.py, which runs as a script, uses it too)."""

from __future__ import annotations

import runpy
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session")
def reassemble_hostile():
    """hostile.reassemble_hostile(payloads, max_open_per_device) -> assembled outcomes."""
    return runpy.run_path(str(HERE / "hostile.py"))["reassemble_hostile"]
