"""Shared helpers of the fuzz tests: the hostile-reassembly module (also used by
``fuzz_decoders.py``, which runs as a script)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load_hostile():
    name = "fuzz_hostile"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "hostile.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="session")
def hostile():
    """The hostile module (:func:`reassemble_hostile`)."""
    return _load_hostile()
