"""The v2 half of the loss sweep (reports/v2_sweep.py) on synthetic numbers: the
checked claim against the erasure limit (pass, fail, n/a when a point is missing),
the confidence bound on a measured yield, the sweep's scenarios, and the report
section and headline built from measured v2 rows."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def rep():
    spec = importlib.util.spec_from_file_location("make_reports", ROOT / "reports" / "make_reports.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)  # puts reports/ on sys.path
    return mod


@pytest.fixture(scope="module")
def vs(rep):
    import v2_sweep

    return v2_sweep


def _row(vs, loss: float, over: float, yielded: int = 200, records: int = 200, dr: int = 0,
         parity="adaptive", model: str = "independent") -> dict:
    limit = vs.limit_airtime_s(dr, loss)
    return {"wire": "v2", "dr": dr, "loss": loss, "model": model, "parity": parity, "records": records,
            "records_yielded": yielded, "yield": yielded / records,
            "yield_lower_95": vs.yield_lower_bound(yielded, records), "limit_airtime_s": limit,
            "airtime_per_delivered_record_s": over * limit, "airtime_per_record_s": over * limit * yielded / records,
            "frames_per_delivered": 14 / (1 - loss) * over, "k": 14, "size": 51,
            "lost_gave_up": 0, "lost_radio": records - yielded, "lost_other": 0, "polls_per_record": 1.0,
            "downlinks_per_record": 1.2, "uplinks_deaf": 0}


def test_limit_is_k_over_one_minus_p_frames_of_s_bytes(vs):
    from collector.core.lorawan import region

    dr0 = region("EU868").dr(0)
    assert vs.v2_k(51) == 14 and vs.v2_k(222) == 4
    assert vs.limit_airtime_s(0, 0.2) == pytest.approx(14 / 0.8 * dr0.time_on_air(51))


def test_limit_check_passes_only_within_the_margin_with_the_yield(vs):
    rows = [_row(vs, p, 1.10) for p in (0.1, 0.2, 0.3)]
    ok = vs.limit_check(rows)
    assert ok["result"] == "pass" and all(pt["within_margin"] and pt["yield_ok"] for pt in ok["points"])
    assert [round(pt["over_limit"], 6) for pt in ok["points"]] == [1.1, 1.1, 1.1]

    slow = [_row(vs, 0.1, 1.10), _row(vs, 0.2, 1.16), _row(vs, 0.3, 1.10)]
    assert vs.limit_check(slow)["result"] == "fail"
    lossy = [_row(vs, 0.1, 1.0), _row(vs, 0.2, 1.0, yielded=199), _row(vs, 0.3, 1.0)]  # 99.5 % < 99.9 %
    res = vs.limit_check(lossy)
    assert res["result"] == "fail" and [pt["yield_ok"] for pt in res["points"]] == [True, False, True]


def test_limit_check_judges_the_steady_state_yield_when_measured(vs):
    """A device's last record of a finite run cannot get a repeated NEED: the check
    judges the yield over the records their device followed with another, and falls
    back to the plain yield for a row without it."""
    ends = [_row(vs, p, 1.0, yielded=196) | {"yield_followed": 1.0} for p in (0.1, 0.2, 0.3)]
    res = vs.limit_check(ends)
    assert res["result"] == "pass" and [pt["yield_checked"] for pt in res["points"]] == [1.0, 1.0, 1.0]
    assert [pt["yield"] for pt in res["points"]] == [0.98, 0.98, 0.98]
    lost = [ends[0], ends[1] | {"yield_followed": 0.995}, ends[2]]
    assert vs.limit_check(lost)["result"] == "fail"
    assert vs.limit_check([_row(vs, p, 1.0, yielded=196) for p in (0.1, 0.2, 0.3)])["result"] == "fail"


def test_limit_check_is_na_when_a_point_is_missing(vs):
    """A point not measured (or measured with the wrong parity, DR or loss model)
    leaves the claim n/a, never a pass; a measured failure still fails."""
    two = [_row(vs, 0.1, 1.0), _row(vs, 0.3, 1.0)]
    assert vs.limit_check(two)["result"] == "n/a"
    assert vs.limit_check([])["result"] == "n/a"
    others = two + [_row(vs, 0.2, 1.0, parity=2), _row(vs, 0.2, 1.0, dr=5), _row(vs, 0.2, 1.0, model="bursty")]
    res = vs.limit_check(others)
    assert res["result"] == "n/a" and [pt["measured"] for pt in res["points"]] == [True, False, True]
    nothing = two + [_row(vs, 0.2, 1.0, yielded=0) | {"airtime_per_delivered_record_s": None, "records": 60}]
    assert vs.limit_check(nothing)["result"] == "n/a"
    assert vs.limit_check([_row(vs, 0.1, 2.0)])["result"] == "fail"


def test_yield_lower_bound(vs):
    for n in (60, 200, 1000):
        lo = vs.yield_lower_bound(n, n)
        assert lo == pytest.approx(0.05 ** (1 / n), abs=1e-9)
        assert 1 - 3.1 / n < lo < 1 - 2.9 / n  # the rule of three
    assert vs.yield_lower_bound(0, 10) == 0.0
    # one loss in 200: P(Bin(200, q) >= 199) = 0.05 at the bound
    lo = vs.yield_lower_bound(199, 200)
    assert math.isclose(lo ** 200 + 200 * lo ** 199 * (1 - lo), 0.05, rel_tol=1e-6)
    assert vs.yield_lower_bound(199, 200) < vs.yield_lower_bound(200, 200)
    with pytest.raises(ValueError):
        vs.yield_lower_bound(3, 2)


def test_sweep_scenarios_are_valid_v2_with_the_fixed_deadline(vs):
    from scenarios.spec import scenario_from_dict

    for dr, p, model, parity, devices, records in vs.plan(False):
        sc = scenario_from_dict(vs.v2_scenario(dr, p, model=model, parity=parity, devices=devices, records=records))
        assert sc.sim.devices.wire == "v2" and sc.sim.devices.parity == parity and sc.sim.devices.dr.dr == dr
        assert sc.sim.gateways.count == 2
    checked = [pt for pt in vs.plan(False) if pt[0] == 0 and pt[2] == "independent" and pt[3] == "adaptive"
               and pt[1] in vs.CHECK_LOSSES]
    assert len(checked) == 3 and all(d * n >= 200 for *_, d, n in checked)
    assert {pt[3] for pt in vs.plan(False)} == {"adaptive", 0, 1, 2, 3, 4}
    assert "collector" not in vs.v2_scenario(0, 0.1)  # the service defaults: the adaptive deadline
    assert len(vs.plan(True)) <= 4


def _v1_rows():
    return [{"dr": dr, "loss": p, "model": m, "fragments": n, "yield": (1 - p) ** n, "records": 60,
             "frames_per_delivered": n / (1 - p) ** n, "airtime_per_record_s": 38.3,
             "airtime_per_delivered_record_s": 38.3 / (1 - p) ** n, "passed": True}
            for dr, n in ((0, 14), (5, 3)) for p in (0.0, 0.1, 0.2) for m in ("independent", "bursty")]


def test_yield_section_and_headline_with_measured_v2(rep, vs, tmp_path):
    v2 = [_row(vs, p, 1.1) for p in (0.1, 0.2, 0.3)] + [_row(vs, p, 1.3, parity=r) for p in (0.1, 0.2)
                                                      for r in range(5)]
    v2 += [_row(vs, 0.2, 1.05, dr=5), _row(vs, 0.2, 1.2, model="bursty")]
    md = rep.yield_section(_v1_rows(), [0, 5], tmp_path, v2)
    for name in ("yield_vs_loss.png", "yield_vs_airtime.png", "frames_vs_limit.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 2000, name
    assert "within 15 % of k/(1-p) S-byte frames" in md and ": PASS.**" in md
    assert md.count("| DR0 | independent |") == 3 + 10 + 3  # v2 adaptive, v2 fixed, v1
    assert "**1.100 x** the limit" in md
    head = __import__("yield_report").headline(_v1_rows(), rep.sizes_of([0, 5]), v2=v2)
    assert "v2 with adaptive parity and repair rounds delivers 100.0% of 200 records measured" in head
    assert "v1 and v2 points are measured through the real collector" in head
    # without the measured v2 rows the headline falls back to theory and says so
    assert "v2 figures without repair are theory" in __import__("yield_report").headline(
        _v1_rows(), rep.sizes_of([0, 5]))
    na = rep.yield_section(_v1_rows(), [0, 5], tmp_path, v2[:2])
    assert "n/a (a point was not measured)" in na and "30 %: not measured" in na


def test_scenarios_md_renders_from_saved_results(rep, vs, tmp_path):
    """scenarios.md is rebuilt from the saved JSON alone (no run), v2 rows and the
    checked result included."""
    v1 = [r | {"complete": r["yield"], "partial": 0.0, "incident": 1 - r["yield"], "n": 60} for r in _v1_rows()]
    data = {"quick": False, "loss_sweep": v1, "v2_sweep": [_row(vs, p, 1.2) for p in (0.1, 0.2, 0.3)],
            "scenarios": [], "scenarios_wall_s": 1.0, "sweep_wall_s": 2.0, "sweep_jobs": 2, "machine": None}
    md = rep.render_scenarios(data, tmp_path)
    assert ": FAIL.**" in md and "**1.200 x** the limit (NOT within 15 %)" in md
    assert "2 point(s) at a time" in md and "/tmp" not in md
