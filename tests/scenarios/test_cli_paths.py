"""Issue 12, items 15 and 16: ``scenarios run`` checks its --json path before the
run, and takes a relative --keep directory."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from scenarios.cli import main as scenarios_main


def test_scenarios_json_to_an_unwritable_path_fails_before_the_run(tiny_file, tmp_path):
    f = tmp_path / "plain-file"
    f.write_text("x")
    res = CliRunner().invoke(scenarios_main, ["run", str(tiny_file()), "--quiet", "--json", str(f / "r.json")])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output and "cannot write --json" in res.output
    assert "== tiny" not in res.output  # refused before the scenario ran


@pytest.mark.timeout(120)
def test_scenarios_keep_takes_a_relative_directory(tiny_file, tmp_path, monkeypatch):
    sc = tiny_file()
    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(scenarios_main, ["run", str(sc), "--quiet", "--keep", "kept"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "kept" / "tiny" / "collector.db").exists()
    assert (tmp_path / "kept" / "tiny" / "collector.log").exists()
