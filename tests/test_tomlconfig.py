"""One way to read TOML configuration, everywhere: an unknown key or table is a
one-line error naming it (the collector's settings, ``hil --config``, the simulator's
configuration, scenario files)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from collector.cli.main import cli as collector_cli
from collector.service.config import load_config as load_service_config
from collector.tomlconfig import ConfigError, check_keys, read_toml
from devicesim.config import load_config as load_sim_config
from hil.cli import main as hil_cli
from scenarios.spec import ScenarioError, load_scenario


def write(tmp_path, text: str, name: str = "c.toml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def one_line_error(output: str, *needles: str) -> None:
    err = [line for line in output.splitlines() if line.startswith("Error:")]
    assert len(err) == 1 and "Traceback" not in output, output
    for n in needles:
        assert n in err[0], err[0]


def test_check_keys_names_unknown_keys_and_tables():
    check_keys({"a": 1, "t": {"x": 1}}, keys={"a"}, tables={"t"})
    with pytest.raises(ConfigError, match=r"^where: unknown key\(s\) b, c; known: a$"):
        check_keys({"a": 1, "c": 2, "b": 3}, keys={"a"}, where="where")
    with pytest.raises(ConfigError, match=r"unknown table\(s\) \[u\]; known tables: \[t\]"):
        check_keys({"u": {"a": 1}}, keys={"a"}, tables={"t"})


def test_read_toml_errors_are_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file .*: it does not exist"):
        read_toml(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        read_toml(write(tmp_path, "a = \n"))


@pytest.mark.parametrize("text", [
    '[anything]\nhost = "0.0.0.0"\n',   # used to set the bind address
    '[delivery]\nhost = "0.0.0.0"\n',   # a setting in another group's table
    '[ingest.more]\nhost = "0.0.0.0"\n',
])
def test_collector_config_rejects_unknown_tables(tmp_path, text):
    with pytest.raises(ValueError, match="unknown table|unknown setting") as e:
        load_service_config(write(tmp_path, text), env={})
    assert "\n" not in str(e.value)
    r = CliRunner().invoke(collector_cli, ["serve", "--config", str(tmp_path / "c.toml")])
    assert r.exit_code == 2
    one_line_error(r.output, "c.toml")


def test_collector_config_tables_and_top_level_still_work(tmp_path):
    cfg = load_service_config(write(tmp_path, 'port = 9000\n[ingest]\nhost = "0.0.0.0"\n[delivery]\nmax-age = 60\n'
                                               '[reassembly]\nmessage_timeout = 120\n[operations]\nretention = 5\n'),
                              env={})
    assert (cfg.host, cfg.port, cfg.max_age, cfg.message_timeout, cfg.retention) == ("0.0.0.0", 9000, 60, 120, 5)


@pytest.mark.parametrize(("text", "needle"), [
    ('[probe]\nprot = "/dev/ttyUSB0"\n', "unknown key(s) prot"),           # used to be ignored
    ('[send-records]\nverify_timout = 5\n', "unknown key(s) verify_timout"),
    ('[prbe]\nport = "/dev/ttyUSB0"\n', "unknown table(s) [prbe]"),
    ('port = "/dev/ttyUSB0"\n', "unknown key(s) port"),
])
def test_hil_config_rejects_unknown_keys_and_tables(tmp_path, text, needle):
    r = CliRunner().invoke(hil_cli, ["--config", str(write(tmp_path, text)), "probe"])
    assert r.exit_code == 2
    one_line_error(r.output, needle)


def test_hil_config_sets_command_defaults(tmp_path):
    p = write(tmp_path, '[send_records]\nverify-timeout = 7.5\n')
    r = CliRunner().invoke(hil_cli, ["--config", str(p), "send-records", "--help"])
    assert r.exit_code == 0 and "[default: 7.5]" in r.output, r.output


def test_devicesim_config_rejects_tables_beside_its_own(tmp_path):
    p = write(tmp_path, '[devicesim]\nregion = "US915"\n[devicesm.devices]\ncount = 3\n')
    with pytest.raises(ConfigError, match=r"unknown table\(s\) \[devicesm\]"):
        load_sim_config(p)
    assert load_sim_config(write(tmp_path, '[devicesim]\nregion = "US915"\n')).region == "US915"
    with pytest.raises(ConfigError, match=r"devices: unknown table\(s\) \[recrd\]"):
        load_sim_config(write(tmp_path, '[devices.recrd]\nsamples = 10\n'))


def test_scenario_files_reject_unknown_tables(tmp_path):
    with pytest.raises(ScenarioError, match=r"webapp: unknown table\(s\) \[faults\]"):
        load_scenario(write(tmp_path, 'name = "x"\n[webapp.faults]\nerror_rate = 1\n'))
    with pytest.raises(ScenarioError, match=r"unknown table\(s\) \[expcet\]"):
        load_scenario(write(tmp_path, 'name = "x"\n[expcet]\nincidents = "== 0"\n'))


def test_device_registry_rejects_unknown_keys_and_tables():
    from collector.service.registry import parse_toml

    assert [d.dev_eui for d in parse_toml('[devices.00000000000000A2]\nname = "x"\n')] == ["00000000000000A2"]
    with pytest.raises(ValueError, match=r"unknown table\(s\) \[devics\]"):
        parse_toml('[devics.00000000000000A2]\nname = "x"\n')
    with pytest.raises(ValueError, match=r"device\[0\]: unknown key\(s\) tokn"):
        parse_toml('[[device]]\ndev_eui = "00000000000000A1"\ntokn = "x"\n')
