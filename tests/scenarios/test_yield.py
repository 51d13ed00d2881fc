"""Record yield: only an exact complete document counts, every other record is charged
to the first stage that lost one of its fragments, and nothing to measure is n/a."""

from __future__ import annotations

import tomllib

import pytest

from scenarios.measure import Observed, measure
from scenarios.runner import run_scenario
from scenarios.spec import parse_expectation, scenario_from_dict
from scenarios.yields import Fate, cause

ALL = frozenset(range(14))


def fate(**kw) -> Fate:
    base = {"count": 14, "sent": ALL, "heard": ALL, "delivered": ALL, "refused": frozenset(), "airtime_s": 10.0}
    return Fate(**{**base, **kw})


@pytest.mark.parametrize(("kw", "want"), [
    ({}, "other"),
    ({"sent": ALL - {13}, "heard": ALL - {2, 13}}, "gave_up"),
    ({"gave_up": True}, "gave_up"),
    ({"heard": ALL - {2}, "delivered": ALL - {2, 3}}, "radio"),
    ({"delivered": ALL - {3}, "refused": frozenset({4})}, "network_server"),
    ({"refused": frozenset({4})}, "collector_down"),
    ({"sent": None, "heard": None, "delivered": None}, "other"),
    # v2: any 12 of 16 frames rebuild the record, whichever they are
    ({"count": 16, "need": 12, "sent": frozenset(range(16)), "heard": frozenset(range(4, 16)),
      "delivered": frozenset(range(4, 16))}, "other"),
    ({"count": 16, "need": 12, "sent": frozenset(range(16)), "heard": frozenset(range(5, 16))}, "radio"),
    ({"count": 16, "need": 12, "sent": frozenset(range(11))}, "gave_up"),
])
def test_loss_charged_to_the_first_stage_that_lost_a_fragment(kw, want):
    assert cause(fate(**kw)) == want


def test_only_exact_complete_documents_count(truth_factory, upload):
    a, b, c, d, e = (truth_factory(s, m) for s, m in ((1, 5), (2, 6), (3, 7), (4, 8), (5, 9)))
    ea = a.expected(ALL, 0)                         # stored exact: yielded
    eb = b.expected(ALL - {13}, 1)                  # partial stored: delivered, not yielded
    ec = c.expected(ALL, 2)                         # stored with other bytes: not yielded
    ed = d.expected(ALL - {0}, 3)                   # incident: lost on the radio
    ee = e.expected(set(), 4)                       # nothing arrived: collector was down
    wrong = ec.xml.replace(b"<", b" <", 1)
    uploads = [upload(ea, 10), upload(eb, 20), upload(ec, 30, xml=wrong)]
    fates = [fate(), fate(heard=ALL - {13}), fate(), fate(heard=ALL - {0}), fate(refused=ALL)]
    v, _ = measure([ea, eb, ec, ed, ee], Observed(uploads=uploads), fates)
    assert v["records_yielded"] == 1
    assert v["record_yield"] == pytest.approx(1 / 5)
    assert v["record_delivered"] == pytest.approx(3 / 5)
    assert (v["lost_radio"], v["lost_other"], v["lost_collector_down"], v["lost_gave_up"],
            v["lost_network_server"]) == (2, 1, 1, 0, 0)
    assert v["airtime_per_record_s"] == pytest.approx(10.0)
    assert v["airtime_per_delivered_record_s"] == pytest.approx(50.0)
    assert v["frames_per_delivered_record"] == pytest.approx(70.0)
    assert (v["parity_rows_per_record"], v["downlinks_per_record"], v["repair_rounds"]) == (0, 0, 0)
    assert v["end_to_end_max_s"] == pytest.approx(30 - ea.created_at)
    assert not parse_expectation("record_yield", ">= 0.999").check(v["record_yield"])


def test_nothing_to_measure_is_na_and_fails_its_expectation():
    v, _ = measure([], Observed(), [])
    for name in ("record_yield", "record_delivered", "airtime_per_record_s", "airtime_per_delivered_record_s",
                 "parity_rows_per_record", "downlinks_per_record", "end_to_end_max_s"):
        assert v[name] is None, name
    assert not parse_expectation("record_yield", ">= 0").check(v["record_yield"])


KILLED = """
name = "yield-kill"
seed = 4
hours = 1
[devicesim]
region = "EU868"
devices = { count = 4, radius_m = 100, dr = { kind = "fixed", dr = 5 }, schedule = { kind = "every", every_min = 20 } }
channel = { model = "bernoulli", p = 0.2 }
[[faults.kill]]
at_s = 900
down_s = 900
"""


def test_runner_splits_the_losses_of_a_run_by_cause():
    r = run_scenario(scenario_from_dict(tomllib.loads(KILLED)))
    v = r.values
    lost = sum(v[f"lost_{c}"] for c in ("gave_up", "radio", "network_server", "collector_down", "other"))
    assert v["records"] - v["records_yielded"] == lost
    assert v["lost_radio"] > 0 and v["lost_collector_down"] > 0 and v["lost_other"] == 0
    assert 0 < v["record_yield"] < 1
    assert v["record_yield"] == pytest.approx(v["records_yielded"] / v["records"])
    sim = r.source["simulator"]
    assert v["airtime_per_record_s"] == pytest.approx(sim["airtime_s"] / v["records"])


def test_yield_over_followed_records_leaves_out_each_devices_last(truth_factory, upload):
    recs = [truth_factory(s, m) for s, m in ((1, 5), (2, 6), (3, 7))]
    es = [t.expected(ALL, i) for i, t in enumerate(recs)]
    for i, e in enumerate(es):
        e.created_at += 100 * i
    es[2].dev_eui = "OTHER"  # another device's only record: not followed
    v, _ = measure(es, Observed(uploads=[upload(es[0], 10)]), [fate()] * 3)
    # of the device's records only the first had a later one; the second was its last
    assert v["record_yield_followed"] == 1.0 and v["record_yield"] == pytest.approx(1 / 3)
    v, _ = measure(es, Observed(uploads=[upload(es[1], 10)]), [fate()] * 3)
    assert v["record_yield_followed"] == 0.0
    v, _ = measure(es[2:], Observed(uploads=[]), [fate()])
    assert v["record_yield_followed"] is None  # nothing followed: n/a
