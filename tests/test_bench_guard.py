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


def _ingest(bare_us: list[float], collector_us: list[float]) -> dict:
    """A bench_ingest.py result: per-run CPU per request of the bare handler and a collector."""
    per_run = [round(c / b, 3) for b, c in zip(bare_us, collector_us, strict=True)]
    return {"levels": [{"connections": 64, "cpu_ratio": {"collector": sorted(per_run)[len(per_run) // 2]},
                        "cpu_ratio_per_run": {"collector": per_run, "gate": [1.2] * len(per_run)}}]}


def test_the_ingest_cpu_ratio_is_guarded_whatever_the_machine_s_speed(tmp_path, capsys):
    (tmp_path / "bench.json").write_text(json.dumps(_run(0.010, 0.020, 0.85)))
    (tmp_path / "bench-rec.json").write_text(json.dumps(_run(0.010, 0.020, 0.85)))

    def judge(fresh: dict, recorded: dict) -> int:
        (tmp_path / "ingest.json").write_text(json.dumps(fresh))
        (tmp_path / "ingest-rec.json").write_text(json.dumps(recorded))
        return guard.main([str(tmp_path / "bench.json"), str(tmp_path / "ingest.json"),
                           "--recorded", str(tmp_path / "bench-rec.json"),
                           "--recorded", str(tmp_path / "ingest-rec.json")])

    recorded = _ingest([50, 50, 50], [150, 150, 150])  # 3.0 x bare: bare/collector 0.33
    # a machine five times slower, same ratio: passes; the gate server is not judged
    assert judge(_ingest([250, 250, 250], [750, 750, 750]), recorded) == 0
    out = capsys.readouterr().out
    assert "ingest CPU bare/collector: 0.33 (recorded 0.33" in out and "bare/gate" not in out
    assert judge(_ingest([50, 50, 50], [190, 190, 190]), recorded) == 0  # 3.8 x: -21 %
    assert judge(_ingest([50, 50, 50], [210, 210, 210]), recorded) == 1  # 4.2 x: -29 %
    assert "REGRESSION ingest CPU bare/collector" in capsys.readouterr().err
    # the median run decides: one disturbed run does not fail it
    assert judge(_ingest([50, 50, 50], [150, 400, 150]), recorded) == 0


def test_the_recorded_ingest_figures_are_readable_by_the_guard():
    recorded = guard.ratios(json.loads((ROOT / "reports" / "results" / "ingest.json").read_text()))
    assert {"ingest CPU bare/collector", "ingest CPU bare/collector-w2"} <= set(recorded)
