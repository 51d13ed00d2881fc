"""Every shipped scenario file is a test: CI runs the whole set end to end."""

from __future__ import annotations

import pytest

from scenarios.runner import run_scenario
from scenarios.spec import load_scenario, shipped_files


@pytest.mark.slow
@pytest.mark.timeout(240)
@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: p.stem)
def test_scenario(path):
    res = run_scenario(load_scenario(path))
    failed = [f"{e.name} = {e.value} (limit {e.op} {e.limit:g})" for e in res.expectations if not e.passed]
    assert not failed, f"{path.name}: " + "; ".join(failed) + f"\n{res.details.get('mismatches')}"
