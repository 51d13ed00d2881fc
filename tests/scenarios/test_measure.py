"""The measurement functions against hand-made observations: each measurement
reaches its ideal value on a faithful Web App and fails on a deliberately wrong one."""

from __future__ import annotations

import pytest

from collector.core.assemble import assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.testing.examples import EXAMPLE_DEV_EUI
from scenarios.measure import Observed, measure, percentile
from scenarios.spec import Expectation, parse_expectation

ALL = range(14)


def _run(expected, uploads, incidents=(), **kw):
    obs = Observed(uploads=list(uploads), incidents=list(incidents), **kw)
    values, details = measure(expected, obs)
    return values, details


def test_expected_kinds(truth_factory):
    t = truth_factory()
    assert t.expected(ALL).kind == "complete"
    assert t.expected([]).kind == "none"
    assert t.expected([i for i in ALL if i != 0]).kind == "incident"
    assert t.expected([i for i in ALL if i != 5]).kind == "incident"  # required section hole
    p = t.expected([i for i in ALL if i != 13])
    assert p.kind == "partial"
    assert p.missing_fragments == [13]
    # the last fragment carries the tail of config and site: both incomplete
    assert p.missing_blocks == ["config", "site"]
    assert b'missingFragments="13"' in p.xml and b'missingBlocks="config site"' in p.xml


@pytest.mark.parametrize("missing", [[], [13], [12, 13]])
def test_expected_documents_equal_what_the_collector_builds(truth_factory, missing):
    """The expected document (complete or partial) is byte-equal to the collector's own
    reassembly of the same fragments with the same receive times."""
    t = truth_factory()
    have = [i for i in ALL if i not in missing]
    exp = t.expected(have)
    acked = t.acked(have)
    r = Reassembler(Settings(message_timeout=900, deadline_policy="fixed"))
    closed = []
    for i in have:
        up = Uplink(EXAMPLE_DEV_EUI, 16, t.fragments[i], acked[i].received_ms, fcnt=i, data_rate="SF12BW125")
        closed += r.feed(up, acked[i].arrived).closed
    closed += r.expire(1e12)
    outcome = assemble(closed[0])
    if exp.kind == "incident":
        assert outcome.kind == "incident"
    else:
        assert outcome.xml == exp.xml


def test_faithful_web_app_meets_every_limit(truth_factory, upload):
    a, b, c, d = truth_factory(1), truth_factory(2, 6), truth_factory(3, 7), truth_factory(4, 8)
    ea, eb = a.expected(ALL, 0), b.expected([i for i in ALL if i != 13], 1)
    ec, ed = c.expected([0, 1], 2), d.expected([], 3)
    v, _ = _run([ea, eb, ec, ed], [upload(ea, ea.last_arrival + 1), upload(eb, eb.last_arrival + 900)],
                [(EXAMPLE_DEV_EUI, 7, "required_missing")])
    assert v["delivered_ratio"] == 1.0
    assert v["complete_documents_exact"] == v["partial_documents_exact"] == v["complete_delivered_ratio"] == 1.0
    assert v["incidents_for_lost_required"] == 1.0
    assert (v["spurious_incidents"], v["duplicate_deliveries"], v["unexpected_documents"]) == (0, 0, 0)
    assert (v["documents_complete"], v["documents_partial"], v["expected_incidents"]) == (1, 1, 1)
    assert v["records_reached"] == 3
    assert v["latency_max_s"] == pytest.approx(900)
    assert v["latency_p50_s"] == pytest.approx(450.5)


def test_missing_document_fails_delivered_ratio(truth_factory, upload):
    a, b = truth_factory(1), truth_factory(2, 6)
    ea, eb = a.expected(ALL, 0), b.expected(ALL, 1)
    v, d = _run([ea, eb], [upload(ea, 1.0)])
    assert v["delivered_ratio"] == 0.5 and v["missing_documents"] == 1
    assert not parse_expectation("delivered_ratio", ">= 1.0").check(v["delivered_ratio"])
    assert d["missing_documents"][0]["key"] == eb.key


def test_altered_byte_fails_complete_documents_exact(truth_factory, upload):
    e = truth_factory().expected(ALL)
    wrong = e.xml.replace(b"PUMP-7", b"PUMP-8")
    v, d = _run([e], [upload(e, 1.0, xml=wrong)])
    assert v["complete_documents_exact"] == 0.0 and v["complete_delivered_ratio"] == 0.0
    assert d["mismatches"]


def test_partial_naming_the_wrong_fragments_fails(truth_factory, upload):
    t = truth_factory()
    e = t.expected([i for i in ALL if i != 13])
    for wrong in (e.xml.replace(b'missingFragments="13"', b'missingFragments="12 13"'),
                  e.xml.replace(b'missingBlocks="config site"', b'missingBlocks="site"')):
        assert wrong != e.xml
        v, _ = _run([e], [upload(e, 1.0, xml=wrong)])
        assert v["partial_documents_exact"] == 0.0


def test_partial_where_complete_was_due_fails(truth_factory, upload):
    """A deadline that closed a message early: every fragment arrived, the Web App got a partial."""
    t = truth_factory()
    e = t.expected(ALL)
    early = t.expected([i for i in ALL if i != 13])
    v, _ = _run([e], [upload(e, 1.0, xml=early.xml)])
    assert v["partial_documents_exact"] == 0.0 and v["complete_delivered_ratio"] == 0.0
    assert v["delivered_ratio"] == 1.0  # a document arrived, but not the right one


def test_duplicates_and_restarts(truth_factory, upload):
    e = truth_factory().expected(ALL)
    v, _ = _run([e], [upload(e, 1.0), upload(e, 2.0, status=409)])
    assert v["duplicate_deliveries"] == 1
    # the same document again after a restart of the collector is the idempotent redelivery
    v, _ = _run([e], [upload(e, 1.0, epoch=1), upload(e, 2.0, epoch=2, status=409)])
    assert (v["duplicate_deliveries"], v["redelivered_after_restart"]) == (0, 1)
    # a different document for the same record after a restart is a duplicate
    other = truth_factory().expected([i for i in ALL if i != 13])
    v, _ = _run([e], [upload(e, 1.0, epoch=1), upload(e, 2.0, epoch=2, status=409, xml=other.xml)])
    assert v["duplicate_deliveries"] == 1


def test_unexpected_documents(truth_factory, upload):
    t = truth_factory()
    inc = t.expected([0, 1, 2])  # the required section did not arrive: no document allowed
    doc = truth_factory().expected(ALL)
    v, _ = _run([inc], [upload(doc, 1.0)])
    assert v["unexpected_documents"] == 1


def test_incident_measurements(truth_factory):
    e1 = truth_factory(1, 5).expected([1, 2])
    e2 = truth_factory(2, 6).expected([0])
    v, _ = _run([e1, e2], [], [(EXAMPLE_DEV_EUI, 5, "fragment0_missing")])
    assert v["incidents_for_lost_required"] == 0.5
    v, _ = _run([e1, e2], [], [(EXAMPLE_DEV_EUI, 5, "x"), (EXAMPLE_DEV_EUI, 6, "x"), (EXAMPLE_DEV_EUI, 9, "x")])
    assert v["incidents_for_lost_required"] == 1.0 and v["spurious_incidents"] == 1


def test_state_counters_pass_through():
    v, _ = _run([], [], open_messages=2, pending_documents=1, dead_letters=3, ingest_errors=4)
    assert (v["unsettled"], v["dead_letters"], v["ingest_errors"]) == (3, 3, 4)
    assert v["latency_p95_s"] is None
    assert not Expectation("latency_p95_s", "<=", 10).check(v["latency_p95_s"])


def test_percentile():
    assert percentile([], 0.5) is None
    assert percentile([3.0], 0.95) == 3.0
    assert percentile([1, 2, 3, 4, 5], 0.5) == 3
    assert percentile([0, 10], 0.95) == pytest.approx(9.5)


def test_a_ratio_with_nothing_to_measure_is_na_and_an_expectation_on_it_fails(truth_factory, upload):
    """No partial document (and no incident due): the ratios over them are n/a, not 1.0,
    and ``partial_documents_exact == 1.0`` says so instead of passing vacuously."""
    from scenarios.cli import expectation_table
    from scenarios.runner import ExpectationResult
    a = truth_factory(1)
    ea = a.expected(ALL, 0)
    v, _ = _run([ea], [upload(ea, ea.last_arrival + 1)])
    assert v["complete_documents_exact"] == 1.0
    assert v["partial_documents_exact"] is None and v["incidents_for_lost_required"] is None
    exp = parse_expectation("partial_documents_exact", "== 1.0")
    assert not exp.check(v["partial_documents_exact"])
    table = expectation_table(type("R", (), {"expectations": [
        ExpectationResult(exp.name, v[exp.name], exp.op, exp.limit, exp.check(v[exp.name]))]})())
    assert "n/a" in table and "FAIL (n/a: nothing to measure)" in table, table
