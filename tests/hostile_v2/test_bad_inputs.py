"""Every bad input of wire-format-v2.md section 5, through every ingest format over
real HTTP: 400 with a reason, and nothing stored (the API shows no fragment, no
message, no incident and no repair state afterwards); ``collector decode`` refuses
the same bytes with a one-line message."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from collector.cli.main import cli
from collector.testing.harness import LiveService
from devicesim.formats import AppUplink, uplink_body

T0_NS = 1_800_000_000 * 10**9

BAD = {
    "k0": "0300000201",
    "k255-fragment": "0300ff02" + "01" * 8,
    "k255-poll": "07ffff06",
    "k0-poll": "07ff0006",
    "three-bytes": "070004",
    "four-byte-fragment": "07000401",
    "243-bytes": "07000200" + "ab" * 239,
    "poll-five-bytes": "07ff040600",
    "poll-three-bytes": "07ff04",
    "pad-equal-L": "07000408" + "01" * 8,
    "pad-above-L-parity": "07050409" + "01" * 8,
    "last-chunk-implies-S-243": "070001c8" + "01" * 39,
}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveService(tmp_path_factory.mktemp("bad") / "c.db", stub=False) as s:
        yield s


def counts(live: LiveService) -> tuple:
    st = live.get("/api/status").json()
    return st["fragments"], st["incidents"], st["openMessages"], st["repair"]["devices"]


@pytest.mark.parametrize("fmt", ["ttn", "chirpstack", "generic"])
def test_bad_v2_inputs_are_400_with_a_reason_and_nothing_is_stored(live, fmt):
    before = counts(live)
    for n, (name, hexp) in enumerate(BAD.items()):
        eui = f"BADB{'TCG'.index(fmt[0].upper()) if fmt[0].upper() in 'TCG' else 0:02X}00000000{n:02X}"
        path, body = uplink_body(fmt, AppUplink(eui, 17, n, bytes.fromhex(hexp), T0_NS + n * 10**9, dr=3, sf=9))
        r = live.post(path, body)
        assert r.status == 400, (name, r.status, r.body)
        j = r.json()
        assert j.get("code", "").startswith("v2_"), (name, j)
        assert j["error"] and "\n" not in j["error"], (name, j)
        assert live.get(f"/api/messages?device={eui}").json()["messages"] == [], name
        assert live.get(f"/api/devices/{eui}/repair").status == 404, name
    assert counts(live) == before


def test_decode_refuses_the_same_bytes():
    runner = CliRunner()
    for name, hexp in BAD.items():
        res = runner.invoke(cli, ["decode", "--wire", "v2"], input=hexp + "\n")
        assert res.exit_code == 2, (name, res.exit_code, res.output)
        assert res.exception is None or isinstance(res.exception, SystemExit), (name, res.exception)
        last = res.output.strip().splitlines()[-1]
        assert "Traceback" not in res.output and last.startswith("Error: line 1: invalid v2 uplink"), (name, res.output)
