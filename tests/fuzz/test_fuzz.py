"""Bounded fuzzing of the decoders: hypothesis always, atheris where it installs."""

from __future__ import annotations

import contextlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.core import wire

HERE = Path(__file__).parent


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=800))
def test_record_decoder_raises_only_its_own_errors(data):
    with contextlib.suppress(wire.RecordError):
        wire.decode_record(data)


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=300))
def test_fragment_parser_raises_only_its_own_errors(data):
    try:
        f = wire.parse_fragment(data)
    except wire.FragmentError:
        return
    assert f.encode() == data


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, 3), st.binary(max_size=60)), max_size=40))
def test_reassembly_of_hostile_fragments_never_raises_anything_else(reassemble_hostile, items):
    """Fragments with arbitrary headers and bodies, msg_ids 0-3: every closed message
    becomes a document or an incident."""
    reassemble_hostile((bytes([msg_id]) + body for msg_id, body in items), max_open_per_device=3)


@pytest.mark.skipif(importlib.util.find_spec("atheris") is None, reason="atheris has no wheel for this platform")
def test_atheris_bounded_run():
    res = subprocess.run(
        [sys.executable, str(HERE / "fuzz_decoders.py"), "-runs=20000", "-seed=1"],
        capture_output=True, text=True, timeout=240,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Done 20000 runs" in res.stderr
