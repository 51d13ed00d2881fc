"""Shared helpers of the reliability suite: the workloads module (also used by
``reports/reliability.py``) and a live collector fixture."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


def _load_workloads():
    name = "reliability_workloads"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, HERE / "workloads.py")
    assert spec and spec.loader
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


#: loaded at collection time, so test modules can parametrize over the corpus
WORKLOADS = _load_workloads()


@pytest.fixture(scope="session")
def workloads():
    """The workloads module (crash_run, load_run, bounds_run and process helpers)."""
    return _load_workloads()
