"""The report generator's pure parts on tiny inputs: parsing a pytest-benchmark JSON,
outcome fractions, Markdown tables, and that every figure is written as a PNG."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rep():
    spec = importlib.util.spec_from_file_location("make_reports", ROOT / "reports" / "make_reports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _png(path: Path) -> bool:
    return path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


def test_reassembly_rows_and_plot(rep, tmp_path):
    bench = {"benchmarks": [
        {"name": "test_reassembly_pipeline[11]", "params": {"size": 11}, "stats": {"mean": 0.05},
         "extra_info": {"size": 11, "batch": 50, "fragments": 3700}},
        {"name": "test_baseline_construct_decode[11]", "params": {"size": 11}, "stats": {"mean": 0.1},
         "extra_info": {"size": 11, "batch": 50, "fragments": 3700}},
        {"name": "test_pipeline_to_construct_interleaved[11]", "params": {"size": 11}, "stats": {"mean": 0.3},
         "extra_info": {"size": 11, "batch": 50, "pipeline_messages_per_s": 900, "construct_messages_per_s": 450,
                        "pipeline_to_construct": 2.0}},
        {"name": "test_v2_rebuild_decode_xml[v1]", "params": {"kind": "v1"}, "stats": {"mean": 0.01},
         "extra_info": {"kind": "v1", "size": 51, "batch": 50, "fragments": 700}},
    ]}
    rows = rep.reassembly_rows(bench)  # the per-size pipeline and baseline tests only
    assert [(r["impl"], r["messages_per_s"], r["fragments_per_s"]) for r in rows] == [
        ("baseline", 500.0, 37000.0), ("pipeline", 1000.0, 74000.0)]
    assert rep.reassembly_interleaved(bench) == [{"size": 11, "pipeline": 900, "construct": 450, "ratio": 2.0}]
    assert _png(tmp_path / rep.plot_reassembly(rows, tmp_path))


def test_outcome_fractions_and_loss_plot(rep, tmp_path):
    f = rep.outcome_fractions({"records_reached": 10, "documents": 7, "documents_complete": 6, "documents_partial": 1})
    assert (f["complete"], f["partial"], f["incident"], f["n"]) == (0.6, 0.1, 0.3, 10)
    assert rep.outcome_fractions({"records_reached": 0})["n"] == 0
    rows = [{"dr": dr, "loss": p, "fragments": 3, "complete": (1 - p) ** 3, "partial": 0.1, "incident": 0.2, "n": 5,
             "passed": True} for dr in (0, 5) for p in (0.0, 0.2)]
    assert _png(tmp_path / rep.plot_loss(rows, tmp_path))


def test_latency_ingest_and_simulator_plots(rep, tmp_path):
    res = [{"name": "a", "details": {"latencies_s": [0.0, 0.0, 900.0]}}, {"name": "b", "details": {}}]
    assert _png(tmp_path / rep.plot_latency(res, tmp_path))
    def server(rps: float, p99: float, cpu: float) -> dict:
        return {"requests_per_s": rps, "latency_ms": {"p50": p99 / 4, "p90": p99 / 2, "p99": p99},
                "server_cpu_us_per_request": cpu}

    ingest = {"servers": {"bare": "bare aiohttp handler", "collector-w2": "collector, 2 HTTP workers"},
              "levels": [{"connections": c, "servers": {"bare": server(5000, 20, 50),
                                                        "collector-w2": server(1200, 200, 210)}}
                         for c in (32, 128)]}
    assert _png(tmp_path / rep.plot_ingest(ingest, tmp_path))
    sim = {"results": [{"workload": "lorasim", "devices": 10, "hours": 24.0, "wall_s": 0.5, "uplinks_per_s": 1000}]}
    assert _png(tmp_path / rep.plot_simulator(sim, tmp_path))


def test_markdown_helpers(rep):
    assert rep.md_table(["a", "b"], [[1, 2]]) == "| a | b |\n|---|---|\n| 1 | 2 |"
    m = rep.machine()
    assert m["cpus"] and m["python"] and "numpy" in m["versions"]
    line = rep.machine_line(m)
    assert line.startswith("Measured on: ") and "Python" in line
    assert rep.machine_line(None) == "Machine: not recorded."


def test_loss_scenarios_are_valid(rep):
    from scenarios.spec import scenario_from_dict

    for dr in (0, 3, 5):
        sc = scenario_from_dict(rep.loss_scenario(dr, 0.2, quick=True))
        assert sc.sim.channel.p == 0.2 and sc.sim.devices.dr.dr == dr


def test_loss_sweep_point_at_no_loss_passes(rep):
    """At 0 % loss there is no partial document and no incident: those ratios are n/a,
    and a sweep point must not fail on them (nor pass on a wrong value)."""
    from scenarios.spec import scenario_from_dict

    sc = scenario_from_dict(rep.loss_scenario(0, 0.0, quick=True))
    assert {e.name for e in sc.expect} & set(rep.WHEN_MEASURED) == set()
    clean = {"partial_documents_exact": None, "incidents_for_lost_required": None}
    assert rep.sweep_passed(True, clean)
    assert not rep.sweep_passed(True, {**clean, "partial_documents_exact": 0.5})
    assert not rep.sweep_passed(False, clean)


def test_yield_section_figures_table_and_headline(rep, tmp_path):
    """The yield section from a tiny sweep: three PNGs, a row per sweep point beside its
    theory, and a headline naming v1's measured yield at 10 % and 20 % loss."""
    rows = [{"dr": dr, "loss": p, "model": m, "fragments": n, "yield": (1 - p) ** n, "records": 60,
             "frames_per_delivered": n / (1 - p) ** n, "passed": True}
            for dr, n in ((0, 14), (5, 3)) for p in (0.0, 0.1, 0.2) for m in ("independent", "bursty")]
    md = rep.yield_section(rows, [0, 5], tmp_path)
    for name in ("yield_vs_loss.png", "yield_vs_airtime.png", "frames_vs_limit.png"):
        assert _png(tmp_path / name), name
    assert md.count("| DR0 | independent |") == 3 and md.count("| DR5 | bursty |") == 3
    assert "| DR0 | independent | 10 % | 60 | 0.229 | 0.229 |" in md
    import yield_report

    head = yield_report.headline(rows, rep.sizes_of([0, 5]))
    assert "v1 delivers 22.9% measured" in head and "v1 delivers 4.4% measured" in head
    assert "v2 with r = 7 parity rows and no repair round delivers 99.94%" in head


def test_headline_reads_the_closed_loop_rows(rep, tmp_path):
    import yield_report

    md = tmp_path / "repair_policy.md"
    md.write_text("| loss | setting | records whole | first round | uplinks/record | airtime × v1 |\n"
                  "|---|---|---|---|---|---|\n| 10% | v2 r=2 + repair | 99.0% | 80% | 17.0 | 1.21 |\n"
                  "| 10% | v2 adaptive + repair | 100.0% | 99.5% | 17.4 | 1.26 |\n"
                  "| 20% | v2 adaptive + repair | 99.9% | 98.8% | 19.9 | 1.43 |\n", encoding="utf-8")
    assert yield_report.closed_loop_rows(md) == {"10%": {"whole": "100.0%", "airtime": "1.26"},
                                                 "20%": {"whole": "99.9%", "airtime": "1.43"}}
    assert yield_report.closed_loop_rows(tmp_path / "absent.md") == {}


def test_headline_names_v2_measured_through_the_collector(rep):
    """The v2 scenario files' yields reach the headline; without them it says they were
    not measured rather than borrowing a figure."""
    import yield_report

    rows = [{"dr": 0, "loss": p, "model": "independent", "fragments": 14, "yield": 0.5, "records": 60}
            for p in (0.1, 0.2)]
    files = [{"name": "v2_loss_10pct", "values": {"record_yield": 1.0, "records": 88}},
             {"name": "v2_loss_20pct", "values": {"record_yield": None, "records": 0}},
             {"name": "mixed_v1_v2", "values": {"airtime_v2_over_v1": 1.24}}]
    head = yield_report.headline(rows, rep.sizes_of([0]), files=files)
    assert "v2 at 10% loss (TTS downlink push) 100.0% of 88 records" in head
    assert "v2 at 20% loss" not in head  # n/a is not a figure
    assert "1.24 x v1's airtime" in head
    assert "not measured yet" in yield_report.headline(rows, rep.sizes_of([0]), files=[])
