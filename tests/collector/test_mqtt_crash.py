"""kill -9 of a collector subscribed to a real Mosquitto with uplinks in flight:
the PUBACK goes out only after the commit, so the broker sends every uplink the
collector had not committed again when it comes back - nothing is lost, nothing is
delivered twice. The collector and the stand-in Web App run as the commands an
operator runs."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess

import pytest

from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import free_port, http, start_command, wait_until
from collector.testing.mosquitto import Broker, close, mosquitto_binary, publish_all, publisher
from devicesim.formats import AppUplink, chirpstack_body

# skipped on a developer's machine without Mosquitto; in CI (which installs it) a missing broker fails
pytestmark = pytest.mark.skipif(mosquitto_binary() is None and not os.environ.get("CI"),
                                reason="mosquitto is not installed (apt-get install mosquitto)")

N_MESSAGES = 12


def uplinks(first: int, count: int) -> list[tuple[str, bytes]]:
    out = []
    for m in range(first, first + count):
        rec = example_record()
        rec.record_seq = 1000 + m
        dev = f"{m % 4:016x}"
        for i, f in enumerate(wire.fragment(m, wire.encode_record(rec), 115)):
            body = chirpstack_body(AppUplink(dev, 16, m * 10 + i, f, (1_800_000_000 + m) * 10**9 + i, dr=3, sf=9))
            out.append((f"application/7/device/{dev}/event/up", json.dumps(body).encode()))
    return out


@pytest.mark.slow
def test_kill_9_with_uplinks_in_flight_loses_nothing(tmp_path):
    stub_port, port = free_port(), free_port()
    procs: list[subprocess.Popen] = []
    with Broker(tmp_path / "broker") as broker:
        try:
            procs.append(start_command(["webapp-stub", "--port", str(stub_port), "--db", str(tmp_path / "s.db"),
                                        "--token", "wt"], tmp_path / "stub.log",
                                        f"http://127.0.0.1:{stub_port}/stub/stats"))
            db = tmp_path / "c.db"
            serve = ["serve", "--port", str(port), "--db", str(db), "--mqtt-url", broker.url(),
                     "--mqtt-integration", "chirpstack", "--webapp-url", f"http://127.0.0.1:{stub_port}",
                     "--webapp-token", "wt", "--message-timeout", "3600", "--deadline-policy", "fixed"]
            health = f"http://127.0.0.1:{port}/healthz"
            svc = start_command(serve, tmp_path / "collector.log", health)
            procs.append(svc)
            wait_until(lambda: http("GET", health).json()["mqtt"]["connected"], what="the collector to connect")
            first = uplinks(0, N_MESSAGES // 2)
            # The store cannot commit while another connection holds its write lock: every
            # uplink is received and fed to the reassembler, none committed - in flight.
            lock = sqlite3.connect(db, isolation_level=None)
            lock.execute("BEGIN IMMEDIATE")
            p = publisher(broker.port)
            publish_all(p, first)
            wait_until(lambda: http("GET", health).json()["mqtt"]["received"] == len(first), timeout=8,
                       what="every uplink received")
            svc.send_signal(signal.SIGKILL)
            svc.wait(10)
            lock.rollback()
            lock.close()
            # while the collector is away the network server goes on publishing
            publish_all(p, uplinks(N_MESSAGES // 2, N_MESSAGES - N_MESSAGES // 2))
            close(p)
            svc = start_command(serve, tmp_path / "collector.log", health)
            procs.append(svc)
            stats = f"http://127.0.0.1:{stub_port}/stub/stats"
            wait_until(lambda: http("GET", stats).json()["documents"] == N_MESSAGES, what="every document delivered")
            docs = http("GET", f"http://127.0.0.1:{stub_port}/stub/documents").json()["documents"]
            keys = [d["idempotencyKey"] for d in docs]
            assert len(keys) == len(set(keys)) == N_MESSAGES
            assert all('complete="true"' in d["xml"] for d in docs)
            svc.send_signal(signal.SIGTERM)
            assert svc.wait(15) == 0
            log = (tmp_path / "collector.log").read_text()
            assert "event=mqtt_stopped" in log and "Traceback" not in log
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
