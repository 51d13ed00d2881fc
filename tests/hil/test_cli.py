"""The ``hil`` command: emulate as a real subprocess, the bench commands in process."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import threading

import pytest
from click.testing import CliRunner

from collector.core import wire
from collector.testing.harness import API_TOKEN, INGEST_TOKEN
from hil import bench, p2p
from hil.cli import main
from hil.drivers.rn2483 import RN2483
from hil.emulator import Air, EmulatorConfig, start_emulator

pytestmark = pytest.mark.timeout(60)
FAST = ["--command-timeout", "1.5", "--join-timeout", "2", "--tx-timeout", "1"]


def first_line(proc: subprocess.Popen, timeout: float = 15.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, "hil emulate printed nothing"
    return proc.stdout.readline().strip()


@pytest.fixture
def emulate_proc():
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> tuple[subprocess.Popen, str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "hil.cli", "emulate", *args],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        procs.append(proc)
        return proc, first_line(proc)

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)


@pytest.mark.parametrize("module", ["rn2483", "rak3172"])
def test_emulate_prints_a_usable_path_and_exits_0_on_sigint(emulate_proc, module):
    proc, path = emulate_proc(module, "--region", "US915", "--speed", "0")
    assert path.startswith("/dev/") and os.path.exists(path)
    result = CliRunner().invoke(main, ["probe", "--port", path])
    assert result.exit_code == 0, result.output
    assert "region: US915" in result.output
    proc.send_signal(signal.SIGINT)
    assert proc.wait(10) == 0


def test_emulate_exits_0_on_sigterm(emulate_proc):
    proc, _path = emulate_proc("rn2483", "--speed", "0")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_emulate_rejects_an_unknown_fault():
    r = CliRunner().invoke(main, ["emulate", "rn2483", "--fault", "lightning"])
    assert r.exit_code == 2 and "unknown fault 'lightning'" in r.output


@pytest.mark.parametrize(("module", "dr", "frags"), [("rn2483", 0, 74), ("rak3172", 3, 3)])
def test_send_records_through_the_emulator_to_the_collector(emulate_proc, collector, messages, module, dr, frags):
    _proc, path = emulate_proc(module, "--region", "US915", "--speed", "0", "--forward-to", collector.url,
                               "--format", "ttn" if module == "rn2483" else "chirpstack", "--token", INGEST_TOKEN)
    r = CliRunner().invoke(main, [
        "send-records", "--port", path, "--module", module, "--count", "2", "--dr", str(dr),
        "--first-msg-id", "254", "--seed", "1", "--collector", collector.url, "--token", API_TOKEN,
        "--verify-timeout", "20", *FAST,
    ])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0][:6] == ["msg_id", "seq", "bytes", "DR", "S", "frags"]
    assert [row[0] for row in rows[1:]] == ["254", "255"]
    for row in rows[1:]:
        assert row[2:6] == ["658", str(dr), str(wire.MAX_SIZE if dr == 3 else 11), str(frags)]
        assert row[-4:] == ["complete", f"{frags}/{frags}", "delivered", "match"]
    assert sum(m["fragmentsReceived"] for m in messages(collector, "0004A30B001C0530")) == 2 * frags


def test_send_records_reports_a_missing_port_clearly(tmp_path):
    r = CliRunner().invoke(main, ["send-records", "--port", str(tmp_path / "ttyUSB7"), "--module", "rn2483"])
    assert r.exit_code == 1
    assert "cannot open serial port" in r.output and "Traceback" not in r.output


def test_join_reports_a_denied_join(emulate_proc):
    _proc, path = emulate_proc("rak3172", "--speed", "0", "--fault", "deny_join=5")
    r = CliRunner().invoke(main, ["join", "--port", path, *FAST])
    assert r.exit_code == 1 and "join denied" in r.output


def test_config_file_and_env_settings(tmp_path, emulate_proc, monkeypatch):
    _proc, path = emulate_proc("rn2483", "--speed", "0")
    cfg = tmp_path / "hil.toml"
    cfg.write_text(f'[probe]\nport = "{path}"\n')
    r = CliRunner().invoke(main, ["--config", str(cfg), "probe"])
    assert r.exit_code == 0 and "model: RN2483" in r.output
    monkeypatch.setenv("HIL_PROBE_PORT", str(tmp_path / "nope"))
    r = CliRunner().invoke(main, ["--config", str(cfg), "probe"])
    assert r.exit_code == 1 and "nope" in r.output


def test_gateway_command_forwards_p2p_frames(collector, messages, until):
    air = Air()
    rx = start_emulator("rn2483", EmulatorConfig(speed=0), air=air)
    tx = start_emulator("rn2483", EmulatorConfig(speed=0, dev_eui="70B3D57ED005A1B2"), air=air)
    record = wire.encode_record(bench.make_record(2, 2, samples=30))
    frags = wire.fragment(9, record, 60)
    errors: list[BaseException] = []

    def sender():
        try:
            with RN2483(tx.path) as m:
                p2p.prepare_radio(m, 9)
                token = 0
                for f in frags:
                    until(lambda t=token: rx.model.rx_waiting and rx.model.rx_token != t, 10, "the gateway to listen")
                    token = rx.model.rx_token
                    m.radio_tx(p2p.encode_frame("70B3D57ED005A1B2", f))
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    t = threading.Thread(target=sender)
    t.start()
    try:
        r = CliRunner().invoke(main, ["gateway", "--port", rx.path, "--collector", collector.url, "--sf", "9",
                                      "--token", INGEST_TOKEN,
                                      "--max-frames", str(len(frags))])
    finally:
        t.join(20)
        rx.stop()
        tx.stop()
    assert not errors
    assert r.exit_code == 0, r.output
    assert r.stdout.count("HTTP 202") == len(frags)
    assert messages(collector, "70B3D57ED005A1B2")[0]["state"] == "complete"


def test_send_records_says_what_the_collector_lacks(emulate_proc, collector):
    """Nothing forwarded: the table names every record missing and the exit status is 1."""
    _proc, path = emulate_proc("rn2483", "--region", "US915", "--speed", "0")
    r = CliRunner().invoke(main, [
        "send-records", "--port", path, "--module", "rn2483", "--count", "1", "--dr", "3",
        "--first-msg-id", "5", "--collector", collector.url, "--token", API_TOKEN, "--verify-timeout", "0.5",
        *FAST,
    ])
    assert r.exit_code == 1
    assert r.stdout.splitlines()[1].split()[-4:] == ["missing", "-", "-", "-"]


def test_send_records_with_a_wrong_token_is_a_clear_error(emulate_proc, collector):
    _proc, path = emulate_proc("rak3172", "--region", "US915", "--speed", "0")
    r = CliRunner().invoke(main, [
        "send-records", "--port", path, "--module", "rak3172", "--count", "1", "--dr", "3",
        "--collector", collector.url, "--token", "wrong", "--verify-timeout", "0.5", *FAST,
    ])
    assert r.exit_code == 1
    assert "HTTP 401" in r.output and "Traceback" not in r.output
