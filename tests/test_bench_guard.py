"""The benchmarks' guard (reports/bench_guard.py) fails on a ratio 25 % below the
recorded one, and only then: it compares ratios, not times."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("bench_guard", ROOT / "reports" / "bench_guard.py")
guard = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(guard)


def _run(pipeline_s: float, construct_s: float, v2_to_v1: float) -> dict:
    return {"benchmarks": [
        {"name": "test_reassembly_pipeline[51]", "params": {"size": 51}, "stats": {"min": pipeline_s}},
        {"name": "test_baseline_construct_decode[51]", "params": {"size": 51}, "stats": {"min": construct_s}},
        {"name": "test_v2_to_v1_interleaved", "params": None, "stats": {"min": 1.0},
         "extra_info": {"v1_to_v1": 1.0, "v2-2_to_v1": v2_to_v1}},
    ]}


def _guard(tmp_path: Path, fresh: dict, recorded: dict) -> int:
    (tmp_path / "fresh.json").write_text(json.dumps(fresh))
    (tmp_path / "rec.json").write_text(json.dumps(recorded))
    return guard.main([str(tmp_path / "fresh.json"), "--recorded", str(tmp_path / "rec.json")])


def test_a_slower_machine_with_the_same_ratios_passes(tmp_path, capsys):
    assert _guard(tmp_path, _run(0.030, 0.060, 0.85), _run(0.010, 0.020, 0.85)) == 0
    assert "pipeline/construct S=51: 2.00 (recorded 2.00" in capsys.readouterr().out


def test_a_ratio_down_more_than_25_percent_fails_and_says_which(tmp_path, capsys):
    assert _guard(tmp_path, _run(0.010, 0.016, 0.85), _run(0.010, 0.020, 0.85)) == 0  # 2.0 -> 1.6: -20 %
    assert _guard(tmp_path, _run(0.010, 0.014, 0.85), _run(0.010, 0.020, 0.85)) == 1  # 2.0 -> 1.4: -30 %
    assert "REGRESSION pipeline/construct S=51" in capsys.readouterr().err
    assert _guard(tmp_path, _run(0.010, 0.020, 0.60), _run(0.010, 0.020, 0.85)) == 1
    assert "REGRESSION v2-2/v1" in capsys.readouterr().err


def test_the_recorded_figures_are_readable_by_the_guard():
    recorded = guard.ratios(json.loads((ROOT / "reports" / "results" / "reassembly.json").read_text()))
    assert {"pipeline/construct S=11", "pipeline/construct S=51", "pipeline/construct S=242"} <= set(recorded)
