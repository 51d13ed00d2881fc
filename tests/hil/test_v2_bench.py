"""``hil send-records --wire v2`` end to end: the core's device state machine drives an
emulated module (``hil emulate`` as a subprocess) whose bench gateway loses uplinks
at random; the real collector answers polls with ACK/NEED through the stand-in
network server, whose queued downlinks the emulator delivers in the RX window after
the next uplink. Every record must end acknowledged and its document at the
collector must be the record sent, byte for byte."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from collector.testing import netserver_stub
from collector.testing.harness import API_TOKEN, INGEST_TOKEN, LiveService
from hil.cli import main

pytestmark = pytest.mark.timeout(120)
EUI = "70B3D57ED00E2E17"
DL_TOKEN = "dl-token"
FAST = ["--command-timeout", "1.5", "--join-timeout", "2", "--tx-timeout", "1"]


@pytest.fixture
def ns():
    with netserver_stub.NetServerThread(netserver_stub.NetServerConfig(downlink_tokens=[DL_TOKEN])) as n:
        yield n


@pytest.fixture
def live(tmp_path, ns):
    with LiveService(tmp_path / "collector.db", downlink_url=ns.url + "/downlink", downlink_token=DL_TOKEN) as s:
        yield s


@pytest.fixture
def emulator():
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "emulate", *args], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline().strip() if proc.stdout else ""
        assert line.startswith("/dev/"), f"hil emulate printed {line!r}"
        return line

    yield start
    for p in procs:
        p.terminate()
        p.wait(10)


def test_send_records_v2_completes_records_through_a_lossy_uplink(emulator, live, ns):
    path = emulator("rn2483", "--speed", "0", "--no-duty-cycle", "--dev-eui", EUI, "--forward-to", live.url,
                    "--token", INGEST_TOKEN, "--downlinks-from", ns.url, "--loss", "0.3", "--loss-seed", "2")
    r = CliRunner().invoke(main, [
        "send-records", "--port", path, "--module", "rn2483", "--count", "3", "--dr", "5", "--wire", "v2",
        "--parity", "1", "--polls", "4", "--poll-interval", "0.5", "--first-msg-id", "40", "--seed", "3",
        "--collector", live.url, "--token", API_TOKEN, "--verify-timeout", "20", *FAST,
    ])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [row[0] for row in rows] == ["40", "41", "42"]
    for row in rows:
        assert row[6] == "acked" and row[-4] == "complete" and row[-1] == "match", row
    # uplinks were lost and the repair loop made up for them: NEED answered with more rows
    (stats,) = [line for line in r.stderr.splitlines() if line.startswith("v2: ")]
    repairs = int(stats.split(", ")[2].split()[0])
    assert repairs > 0 and stats.endswith("3 ACK(s), 0 given up"), stats
    assert sum(int(row[7]) for row in rows) > 0  # NEEDs received, per record
    msgs = live.get(f"/api/messages?device={EUI}").json()["messages"]
    assert sorted((m["msgId"], m["state"]) for m in msgs) == [(40, "complete"), (41, "complete"), (42, "complete")]
