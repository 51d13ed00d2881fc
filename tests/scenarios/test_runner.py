"""The runner and the command line on tiny scenarios (real collector process, real
HTTP, real SQLite): a passing run, a failing expectation, a deadline policy that
must fail the SF12 scenario, and the exit codes."""

from __future__ import annotations

import json
import tomllib

import pytest
from click.testing import CliRunner

from scenarios.cli import main
from scenarios.runner import run_scenario
from scenarios.spec import files_dir, load_scenario, scenario_from_dict

pytestmark = pytest.mark.timeout(120)


def test_tiny_scenario_passes_and_is_deterministic(tiny_file):
    sc = load_scenario(tiny_file())
    r1 = run_scenario(sc)
    assert r1.passed, r1.to_dict()
    v = r1.values
    assert v["records"] == 3 and v["documents_complete"] == 3 and v["uplinks_acked"] == v["uplinks"] == 9
    assert v["collision_loss"] == 0  # a Bernoulli channel: no collisions, and a 0 rather than n/a
    r2 = run_scenario(sc)
    keys = ("documents", "documents_complete", "incidents", "latency_p95_s", "uplinks_acked")
    assert {k: r2.values[k] for k in keys} == {k: v[k] for k in keys}


def test_collision_loss_is_the_share_of_uplinks_lost_to_collisions(tmp_path):
    """Four devices in lockstep on one channel, no capture: their frames collide, and
    the measurement is the simulator's count over the uplinks sent."""
    data = tomllib.loads(TINY_LOCKSTEP)
    r = run_scenario(scenario_from_dict(data))
    sim = r.source["simulator"]
    assert sim["lost_collision"] > 0
    assert r.values["collision_loss"] == sim["lost_collision"] / sim["uplinks_sent"] > 0.5


TINY_LOCKSTEP = """
name = "lockstep"
seed = 3
hours = 1
[devicesim]
region = "EU868"
start = "2026-11-23T23:30:00Z"
devices = { count = 4, radius_m = 60, dr = { kind = "fixed", dr = 5 }, channels_hz = [868100000], schedule = { kind = "daily", hour = 0, jitter_min = 0 } }
channel = { model = "physical", collisions = true, capture = false }
[expect]
records = ">= 1"
"""


def test_cli_run_exit_codes_table_and_json(tiny_file, tmp_path):
    out = tmp_path / "r.json"
    res = CliRunner().invoke(main, ["run", str(tiny_file('documents = "== 99"\n')), "--quiet", "--json", str(out)])
    assert res.exit_code == 1, res.output
    assert "documents" in res.output and "FAIL" in res.output and "== 99" in res.output
    data = json.loads(out.read_text())
    (s,) = data["scenarios"]
    assert s["passed"] is False
    assert {e["name"]: e["passed"] for e in s["expectations"]} == {
        "delivered_ratio": True, "complete_documents_exact": True, "documents": False}
    res = CliRunner().invoke(main, ["run", str(tiny_file()), "--quiet"])
    assert res.exit_code == 0, res.output


def test_cli_bad_file_is_a_usage_error(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('name = "bad"\n[expect]\nhappiness = ">= 1"\n', encoding="utf-8")
    res = CliRunner().invoke(main, ["run", str(p)])
    assert res.exit_code == 2 and "unknown measurement 'happiness'" in res.output
    res = CliRunner().invoke(main, ["run", "no-such-scenario"])
    assert res.exit_code == 2 and "no scenario file" in res.output
    res = CliRunner().invoke(main, ["check", str(p)])
    assert res.exit_code == 2


def test_cli_list_and_check_shipped():
    res = CliRunner().invoke(main, ["list"])
    assert res.exit_code == 0 and "quickstart" in res.output and "INVALID" not in res.output
    res = CliRunner().invoke(main, ["check", "quickstart", "hil_emulated"])
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_fixed_deadline_fails_the_sf12_scenario():
    """The duty-cycle scenario can fail: with a fixed 15-minute deadline every hour-long
    message is cut, and the expectations say so."""
    import tomllib

    data = tomllib.loads((files_dir() / "eu868_sf12_duty_cycle.toml").read_text())
    data["collector"]["deadline_policy"] = "fixed"
    data["hours"] = 4
    data["devicesim"]["devices"]["count"] = 4
    r = run_scenario(scenario_from_dict(data))
    failed = {e.name for e in r.expectations if not e.passed}
    assert not r.passed
    assert {"delivered_ratio", "complete_delivered_ratio", "spurious_incidents"} <= failed
