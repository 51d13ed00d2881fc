"""The operating commands against the database of a service that ran."""

from __future__ import annotations

import json

from click.testing import CliRunner

from collector.cli.main import cli
from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import LiveService
from devicesim.formats import AppUplink, uplink_body

DEV = "70B3D57ED005A1B2"


def run(*args: str) -> tuple[int, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.output


def test_status_incidents_and_devices(tmp_path):
    db = str(tmp_path / "c.db")
    frags = wire.fragment(3, wire.encode_record(example_record()), 115)
    with LiveService(db, deadline_policy="fixed", message_timeout=60) as s:
        s.post_uplinks(uplink_body("generic", AppUplink(DEV, 16, i, f, 1_800_000_000 * 10**9)) for i, f in
                       enumerate(frags[1:], 1))
        s.advance(61)
    code, out = run("status", "--db", db)
    assert code == 0 and "incident 1" in out and "open messages:   0" in out
    code, out = run("status", "--db", db, "--json")
    assert json.loads(out)["messages"]["incident"] == 1
    code, out = run("incidents", "--db", db)
    assert code == 0 and "fragment0_missing" in out
    code, out = run("incidents", "--db", db, "show", "1")
    assert code == 0 and json.loads(out)["code"] == "fragment0_missing"
    code, out = run("incidents", "--db", db, "show", "99")
    assert code == 1 and "no incident '99'" in out

    code, out = run("devices", "--db", db, "add", DEV.lower(), "--token", "secret-t", "--name", "logger-1")
    assert code == 0
    code, out = run("devices", "--db", db, "list")
    assert DEV in out and "token: yes" in out and "secret-t" not in out
    reg = tmp_path / "devs.toml"
    reg.write_text('[[device]]\ndev_eui = "00000000000000A1"\ntoken = "x"\n[devices.00000000000000A2]\n')
    code, out = run("devices", "--db", db, "import", str(reg))
    assert code == 0 and "imported 2" in out
    code, out = run("devices", "--db", db, "remove", "00000000000000A2")
    assert code == 0
    code, out = run("devices", "--db", db, "add", "xyz")
    assert code == 2 and "16 hex digits" in out
    code, out = run("deadletters", "--db", db, "retry")
    assert code == 2 and "--all" in out
    code, out = run("status", "--db", str(tmp_path / "missing.db"))
    assert code == 1 and "does not exist" in out


def test_serve_reports_bad_settings(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('port = "eighty"\n')
    code, out = run("serve", "--config", str(cfg))
    assert code == 2 and "port" in out
    cfg.write_text('[delivery]\nmax_age = 10\nbogus = 1\n')
    code, out = run("serve", "--config", str(cfg))
    assert code == 2 and "unknown setting" in out and "bogus" in out
