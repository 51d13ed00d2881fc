"""Issue 12, item 15 and 16: a bad setting or path is refused in one line, before
anything runs, never with a traceback; settings that would silently do the wrong
thing (an empty token, a mistyped COLLECTOR_* variable, a new directory for a
mistyped --db) are refused or warned about."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
from click.testing import CliRunner

from collector.cli.main import cli
from collector.service import config
from collector.testing.harness import free_port, wait_until
from devicesim.cli import main as devicesim_main

# on code that accepts a bad setting the service starts and runs: fail, do not hang
pytestmark = pytest.mark.timeout(60)


def _serve(tmp_path, *args: str, env: dict | None = None):
    """``collector serve`` in process, for the cases refused before it listens."""
    return CliRunner().invoke(cli, ["serve", "--port", "0", "--db", str(tmp_path / "c.db"), *args],
                              env=env or {}, catch_exceptions=True)


def _one_line_error(res, *pieces: str) -> None:
    assert res.exit_code != 0, res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    err = [ln for ln in res.output.splitlines() if ln.startswith("Error:")]
    assert len(err) == 1, res.output
    for p in pieces:
        assert p in err[0], res.output


def test_an_unknown_default_region_in_the_config_file_is_one_line(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('default_region = "MARS433"\n', encoding="utf-8")  # (AS923 became a known region since)
    _one_line_error(_serve(tmp_path, "--config", str(cfg), "--ingest-token", "x"), "MARS433", "EU868")


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_unknown_log_level_is_one_line(tmp_path, how):
    if how == "flag":
        res = _serve(tmp_path, "--ingest-token", "x", "--log-level", "verbose")
    else:
        res = _serve(tmp_path, "--ingest-token", "x", env={"COLLECTOR_LOG_LEVEL": "verbose"})
    _one_line_error(res, "verbose")


def test_an_fport_outside_the_application_ports_is_refused(tmp_path):
    _one_line_error(_serve(tmp_path, "--ingest-token", "x", "--fport", "300"), "300")
    with pytest.raises(ValueError, match="1..223"):
        config.load_config(env={"COLLECTOR_FPORT": "0"})
    res = CliRunner().invoke(cli, ["decode", "--fport", "300"], input="0102\n")
    assert res.exit_code == 2 and "300" in res.output


@pytest.mark.parametrize("how", ["flag", "env"])
def test_an_empty_ingest_token_is_refused_however_given(tmp_path, how):
    if how == "flag":
        res = _serve(tmp_path, "--ingest-token", "")
    else:
        res = _serve(tmp_path, env={"COLLECTOR_INGEST_TOKEN": ""})
    _one_line_error(res, "ingest_token", "empty token")
    assert not (tmp_path / "c.db").exists()


def test_a_db_in_a_missing_directory_is_refused_not_created(tmp_path):
    db = tmp_path / "no-such-dir" / "c.db"
    res = CliRunner().invoke(cli, ["serve", "--port", "0", "--db", str(db), "--ingest-token", "x"])
    _one_line_error(res, "does not exist", "create it first")
    assert not db.parent.exists()
    res = CliRunner().invoke(cli, ["devices", "--db", str(db), "add", "70B3D57ED0C0FFEE"])
    _one_line_error(res, "does not exist")
    assert not db.parent.exists()


def test_a_db_under_a_file_is_one_line(tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("x")
    _one_line_error(CliRunner().invoke(cli, ["serve", "--port", "0", "--db", str(f / "c.db"), "--ingest-token", "x"]),
                    "c.db")


def test_an_unknown_collector_variable_is_warned_about(tmp_path):
    assert config.unknown_env({"COLLECTOR_INGST_TOKEN": "x", "COLLECTOR_PORT": "1", "COLLECTOR_CONFIG": "c.toml",
                        "OTHER": "1"}) == ["COLLECTOR_INGST_TOKEN"]
    port = free_port()
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")},
           "COLLECTOR_INGST_TOKEN": "typo", "COLLECTOR_INGEST_TOKEN": "t"}
    log = tmp_path / "log"
    with log.open("wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--port", str(port),
                              "--db", str(tmp_path / "c.db")], stderr=out, stdout=out, env=env)
    try:
        wait_until(lambda: "event=listening" in log.read_text(), 60, "the service to listen")
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    text = log.read_text()
    assert "level=warning" in text and "event=unknown_setting variable=COLLECTOR_INGST_TOKEN" in text, text
    assert "typo" not in text  # the value may be a secret


def test_devicesim_config_with_a_wrong_type_is_one_line(tmp_path):
    cfg = tmp_path / "sim.toml"
    cfg.write_text('hours = "abc"\n', encoding="utf-8")
    res = CliRunner().invoke(devicesim_main, ["run", "--config", str(cfg), "--quiet"])
    _one_line_error(res, "hours", "abc")
    cfg.write_text("[devices]\ncount = 2.5\n", encoding="utf-8")
    _one_line_error(CliRunner().invoke(devicesim_main, ["run", "--config", str(cfg), "--quiet"]), "devices.count")
