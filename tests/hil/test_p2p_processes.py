"""Point to point with two ``hil emulate`` processes, as on a bench with two
modules: ``hil gateway`` on one, ``hil send-records --p2p`` on the other, into the
real collector. Before the emulators shared an air across processes the sender said
"sent" and the gateway forwarded nothing."""

from __future__ import annotations

import subprocess
import sys

import pytest
from click.testing import CliRunner

from collector.testing.harness import API_TOKEN, INGEST_TOKEN, LiveService
from hil.cli import main

pytestmark = pytest.mark.timeout(60)
EUI = "70B3D57ED0050001"


def hil(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "hil.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_emulator_processes_carry_p2p_frames_to_the_collector(tmp_path):
    air = str(tmp_path / "air")
    procs = []
    try:
        # real airtimes (speed 1): the gateway re-arms its receiver between frames
        for eui in ("70B3D57ED0050000", EUI):
            procs.append(hil("emulate", "rn2483", "--speed", "1", "--dev-eui", eui, "--air", air))
        rx_path, tx_path = (p.stdout.readline().strip() for p in procs)
        assert rx_path.startswith("/dev/") and tx_path.startswith("/dev/")
        with LiveService(tmp_path / "collector.db") as service:
            gw = hil("gateway", "--port", rx_path, "--collector", service.url, "--token", INGEST_TOKEN, "--sf", "7",
                     "--max-frames", "3")
            procs.append(gw)
            assert "listening on" in gw.stderr.readline()
            r = CliRunner().invoke(main, [
                "send-records", "--port", tx_path, "--module", "rn2483", "--p2p", "--sf", "7", "--count", "1",
                "--first-msg-id", "3", "--seed", "1", "--collector", service.url, "--token", API_TOKEN,
                "--verify-timeout", "20",
            ])
            assert r.exit_code == 0, r.output
            assert gw.wait(20) == 0
            assert gw.stdout.read().count("HTTP 202") == 3
            msgs = service.get(f"/api/messages?device={EUI}").json()["messages"]
            assert [(m["msgId"], m["state"], m["fragmentsReceived"]) for m in msgs] == [(3, "complete", 3)]
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
            p.wait(10)
