"""Configuration files, the command line and the benchmark script's smoke run."""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
from click.testing import CliRunner

from devicesim.cli import main
from devicesim.config import DEFAULT_START, ConfigError, config_from_dict, load_config

TOML = """
[devicesim]
region = "US915"
hours = 2
seed = 4
format = "chirpstack"
start = "2026-11-24T00:00:00Z"

[devicesim.devices]
count = 3
fragment_size = 11

[devicesim.devices.schedule]
kind = "every"
every_min = 30

[devicesim.devices.dr]
kind = "fixed"
dr = 0

[devicesim.channel]
model = "bernoulli"
p = 0.1

[devicesim.gateways]
count = 2
positions = [[0, 0], [100, 0]]

[devicesim.network]
dedup_window_s = 0.2
duplicate_p = 0.05
outages = [{gateway = 1, start_s = 600, duration_s = 1200}]

[devicesim.network.delivery]
base_s = 0.2
jitter_s = 3.0
dist = "lognormal"
"""


def test_toml_file_loads(tmp_path):
    p = tmp_path / "sim.toml"
    p.write_text(TOML)
    c = load_config(p)
    assert c.region == "US915" and c.devices.count == 3 and c.devices.fragment_size == 11
    assert c.start == DEFAULT_START
    assert c.gateways.positions == ((0.0, 0.0), (100.0, 0.0))
    assert c.network.outages[0].duration_s == 1200 and c.network.delivery.dist == "lognormal"


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        ({"region": "CN470"}, "region"),
        ({"devices": {"count": 2, "colour": 1}}, "devices: unknown key(s) colour"),
        ({"channel": {"model": "rayleigh"}}, "channel.model"),
        ({"channel": {"p": 1.5}}, "channel.p"),
        ({"devices": {"record": {"channels": 5}}}, "devices.record.channels"),
        ({"devices": {"record": {"blocks": ["gps"]}}}, "devices.record.blocks"),
        ({"network": {"outages": [{"gateway": 3, "start_s": 0, "duration_s": 1}]}}, "network.outages[0].gateway"),
        ({"network": {"delivery": {"dist": "pareto"}}}, "network.delivery.dist"),
        ({"format": "xml"}, "format"),
        ({"devices": "many"}, "devices: expected a table"),
    ],
)
def test_bad_config_is_named(data, needle):
    with pytest.raises(ConfigError) as e:
        config_from_dict(data)
    assert needle in str(e.value)


def test_parity_adaptive_is_accepted_from_a_table():
    """parity is ``int | str``: "adaptive" from TOML (devices or a group) is a value, not
    a type error; a bad string is still refused by name."""
    c = config_from_dict({"devices": {"count": 2, "wire": "v2", "parity": "adaptive",
                                      "groups": [{"count": 1, "wire": "v2", "parity": "adaptive"},
                                                 {"count": 1, "wire": "v2", "parity": 3}]}})
    assert c.devices.parity == "adaptive" and [g.parity for g in c.devices.groups] == ["adaptive", 3]
    with pytest.raises(ConfigError, match="parity"):
        config_from_dict({"devices": {"wire": "v2", "parity": "lots"}})


def test_fragment_size_above_n_is_refused():
    from devicesim.sim import simulate

    c = config_from_dict({"region": "US915", "devices": {"count": 1, "fragment_size": 51,
                                                         "dr": {"kind": "fixed", "dr": 0}}})
    with pytest.raises(ConfigError, match="N=11"):
        simulate(c)


def test_run_with_config_file_and_flags(tmp_path):
    p = tmp_path / "sim.toml"
    p.write_text(TOML)
    out = tmp_path / "trace.jsonl"
    r = CliRunner().invoke(main, ["run", "--config", str(p), "--devices", "2", "--out", str(out), "--quiet"])
    assert r.exit_code == 0, r.output
    assert "uplinks delivered to the application" in r.output and "DR0 delivered / sent" in r.output
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert lines[0]["config"]["devices"]["count"] == 2
    ups = [x for x in lines if x["kind"] == "uplink"]
    assert ups and all(u["path"] == "/uplink/chirpstack?event=up" for u in ups)
    recs = [x for x in lines if x["kind"] == "record"]
    assert recs and all(r["count"] == 74 for r in recs)


def test_run_flags_and_env(tmp_path):
    out = tmp_path / "t.jsonl"
    r = CliRunner().invoke(main, ["run", "--region", "EU868", "--devices", "3", "--hours", "2", "--format", "generic",
                                  "--every", "20", "--dr", "5", "--loss-p", "0.1", "--out", str(out), "--quiet"],
                           env={"DEVICESIM_RUN_SEED": "9"})
    assert r.exit_code == 0, r.output
    meta = json.loads(out.read_text().splitlines()[0])
    assert meta["seed"] == 9 and meta["config"]["channel"]["model"] == "bernoulli"


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["run", "--region", "XX868", "--quiet"], "unknown region"),
        (["run", "--dr", "fast", "--quiet"], "neither a data-rate index"),
        (["run", "--config", "missing-file.toml"], "cannot read config"),
        (["run", "--wire", "v2", "--parity", "lots", "--quiet"], "--parity: 'lots' is neither"),
        (["run", "--wire", "v2", "--parity", "40", "--quiet"], "devices.parity must be 0..32"),
        (["airtime", "--dr", "9", "--bytes", "10"], "no uplink data rate DR9"),
        (["airtime", "--dr", "0", "--bytes", "10", "--size", "60"], "exceeds N=51"),
    ],
)
def test_cli_errors_are_messages_not_tracebacks(args, needle):
    r = CliRunner().invoke(main, args)
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output


def test_airtime_answers():
    r = CliRunner().invoke(main, ["airtime", "--region", "EU868", "--dr", "0", "--bytes", "658"])
    assert r.exit_code == 0, r.output
    assert "fragments                       14" in r.output
    assert "2793.472 ms" in r.output and "3878.8 s (off-time rule alone: 3633.5 s)" in r.output
    r = CliRunner().invoke(main, ["airtime", "--region", "US915", "--dr", "0", "--bytes", "658"])
    assert "74" in r.output and "370.688 ms" in r.output and "ok" in r.output


def test_run_v2_from_the_command_line(tmp_path):
    out = tmp_path / "t.jsonl"
    r = CliRunner().invoke(main, ["run", "--devices", "3", "--hours", "2", "--every", "30", "--dr", "5",
                                  "--loss-p", "0.2", "--wire", "v2", "--parity", "adaptive", "--out", str(out),
                                  "--quiet"])
    assert r.exit_code == 0, r.output
    assert "downlinks queued / sent / received" in r.output and "v2 NEEDs served" in r.output
    recs = [json.loads(x) for x in out.read_text().splitlines() if '"kind":"record"' in x]
    assert recs and all(x["wire"] == "v2" for x in recs)


def test_every_command_has_help():
    for args in (["--help"], ["run", "--help"], ["airtime", "--help"]):
        r = CliRunner().invoke(main, args)
        assert r.exit_code == 0 and "Usage" in r.output


def test_benchmark_script_smoke(tmp_path):
    script = Path(__file__).resolve().parents[2] / "reports" / "bench_devicesim.py"
    ns = runpy.run_path(str(script))
    out = tmp_path / "bench.json"
    assert ns["main"](["--quick", "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    kinds = [r["workload"] for r in data["results"]]
    assert kinds == ["lorasim", "baseline", "lorasim", "fleet-v1", "fleet-v1-loop", "fleet-v2"]
    assert all(r["uplinks"] > 0 for r in data["results"])
