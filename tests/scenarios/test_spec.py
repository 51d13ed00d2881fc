"""The scenario file loader: every shipped file loads, and bad files give a clear
message naming the key at fault."""

from __future__ import annotations

import tomllib

import pytest

from scenarios.spec import ScenarioError, load_scenario, scenario_from_dict, shipped_files

BASE = {"name": "t", "devicesim": {"devices": {"count": 2}}}


def test_shipped_files_load_and_cover_the_required_set():
    files = shipped_files()
    names = {p.stem for p in files}
    assert len(files) >= 11 and "quickstart" in names
    for p in files:
        sc = load_scenario(p)
        assert sc.name == p.stem, "a scenario's name is its file name"
        assert sc.expect, f"{p.name} has no expectations"
        assert sc.description
    kinds = {load_scenario(p).source for p in files}
    assert kinds == {"devicesim", "hil"}
    assert any(load_scenario(p).kills for p in files)
    assert any(load_scenario(p).webapp_outages for p in files)


def test_defaults_and_mapping():
    sc = scenario_from_dict({
        **BASE, "seed": 5, "hours": 2.5,
        "devicesim": {"region": "US915", "devices": {"count": 7, "wire": "v2", "parity": "adaptive"},
                      "network": {"duplicate_p": 0.1, "downlinks": {"loss_p": 0.9}}},
        "collector": {"message_timeout": 1200, "deadline_policy": "fixed"},
        "webapp": {"error_rate": 0.1, "outages": [[10, 20]]},
        "faults": {"kill": [{"at_s": 30, "down_s": 5}, {"at_s": 10}]},
        "run": {"max_step_s": 30, "concurrency": 4},
        "expect": {"delivered_ratio": ">= 1.0", "duplicate_deliveries": 0, "latency_p95_s": "<=30"},
    })
    assert (sc.sim.seed, sc.sim.hours, sc.sim.region, sc.sim.devices.count) == (5, 2.5, "US915", 7)
    assert sc.sim.network.duplicate_p == 0.1
    assert sc.sim.network.downlinks.loss_p == 0.9 and sc.sim.devices.parity == "adaptive"
    assert sc.collector == {"message_timeout": 1200, "deadline_policy": "fixed"}
    assert [(w.start_s, w.end_s) for w in sc.webapp_outages] == [(10, 20)]
    assert [(k.at_s, k.down_s) for k in sc.kills] == [(10, 0), (30, 5)]
    assert (sc.max_step_s, sc.concurrency) == (30, 4)
    assert [(e.name, e.op, e.limit) for e in sc.expect] == [
        ("delivered_ratio", ">=", 1.0), ("duplicate_deliveries", "==", 0.0), ("latency_p95_s", "<=", 30.0)]


@pytest.mark.parametrize(("patch", "needle"), [
    ({"colour": 1}, "unknown key(s) colour"),
    ({"name": ""}, "name: required"),
    ({"seed": -1}, "seed"),
    ({"hours": "six"}, "hours: expected a number"),
    ({"source": "radio"}, "source"),
    ({"devicesim": {"devices": {"count": 2, "colour": 1}}}, "devices: unknown key(s) colour"),
    ({"devicesim": {"channel": {"model": "rayleigh"}}}, "channel.model"),
    ({"devicesim": {"seed": 3}}, "devicesim.seed"),
    ({"devicesim": {"regoin": "EU868"}}, "devicesim: unknown key(s) regoin"),
    ({"devicesim": {"devices": {"count": -1}}}, "devicesim.devices.count"),
    ({"devicesim": {"network": {"downlinks": {"loss_rate": 0.9}}}}, "downlinks: unknown key(s) loss_rate"),
    ({"devicesim": {"network": {"downlinks": {"loss_p": 2}}}}, "network.downlinks.loss_p"),
    ({"collector": {"message_timeuot": 5}}, "collector: unknown setting(s) message_timeuot"),
    ({"collector": {"port": 8080}}, "collector.port: set by the runner"),
    ({"collector": {"deadline_policy": "sometimes"}}, "deadline_policy"),
    ({"webapp": {"outages": [[20, 10]]}}, "webapp.outages[0]"),
    ({"webapp": {"error_rate": -1}}, "webapp.error_rate"),
    ({"webapp": {"flakiness": 1}}, "webapp: unknown key(s) flakiness"),
    ({"faults": {"kill": [{"down_s": 3}]}}, "faults.kill[0].at_s: required"),
    ({"faults": {"kill": [{"at_s": 3, "when": 1}]}}, "faults.kill[0]: unknown key(s) when"),
    ({"faults": {"reboot": []}}, "faults: unknown key(s) reboot"),
    ({"run": {"max_step_s": 0}}, "run.max_step_s"),
    ({"run": {"speed": 2}}, "run: unknown key(s) speed"),
    ({"expect": {"delivery_ratio": ">= 1"}}, "unknown measurement 'delivery_ratio'"),
    ({"expect": {"delivered_ratio": "at least 1"}}, "delivered_ratio: expected a limit"),
    ({"hil": {"modules": ["rn2483"]}}, "hil: only used with source"),
    ({"source": "hil", "hil": {"modules": ["sx1276"]}}, "hil.modules: unknown module 'sx1276'"),
    ({"source": "hil", "hil": {"region": "US915", "dr": 9}}, "hil.region/dr"),
])
def test_errors_name_the_key(patch, needle):
    with pytest.raises(ScenarioError) as ei:
        scenario_from_dict({**BASE, **patch}, where="f.toml")
    msg = str(ei.value)
    assert msg.startswith("f.toml: ")
    assert needle in msg, msg


def test_file_errors(tmp_path):
    with pytest.raises(ScenarioError, match="cannot read"):
        load_scenario(tmp_path / "missing.toml")
    p = tmp_path / "bad.toml"
    p.write_text("name = \n", encoding="utf-8")
    with pytest.raises(ScenarioError, match="not valid TOML"):
        load_scenario(p)
    p.write_text('name = "x"\n[expect]\nincidents = "== 0"\n', encoding="utf-8")
    assert load_scenario(p).expect[0].limit == 0


def test_expectation_operators():
    sc = scenario_from_dict({**BASE, "expect": {"records": ">= 2", "incidents": "< 1", "unsettled": "== 0",
                                                "latency_max_s": "<= 1e3", "documents": "> 0"}})
    e = {x.name: x for x in sc.expect}
    assert e["records"].check(2) and not e["records"].check(1)
    assert e["incidents"].check(0) and not e["incidents"].check(1)
    assert e["latency_max_s"].check(1000.0) and not e["latency_max_s"].check(1000.5)
    assert e["documents"].check(1) and not e["documents"].check(0)
    assert not e["unsettled"].check(None)


def test_every_shipped_file_is_plain_toml():
    for p in shipped_files():
        tomllib.loads(p.read_text(encoding="utf-8"))
