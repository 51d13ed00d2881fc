"""kill -9 mid-stream, restart on the same database: nothing acknowledged is lost,
nothing is delivered twice. The collector and the stand-in Web App run as the
commands an operator runs."""

from __future__ import annotations

import os
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import free_port, http, process_gone, start_command, wait_until, worker_pids
from devicesim.formats import AppUplink, uplink_body

DEV = "70B3D57ED005A1B2"
TOKEN = "crash-ingest"
N_MESSAGES = 24



def all_uplinks() -> list[tuple[str, dict]]:
    out = []
    for m in range(N_MESSAGES):
        rec = example_record()
        rec.record_seq = 1000 + m
        dev = f"{m % 4:016X}"
        for i, f in enumerate(wire.fragment(m, wire.encode_record(rec), 115)):
            out.append(uplink_body(("ttn", "chirpstack", "generic")[i % 3],
                                   AppUplink(dev, 16, m * 10 + i, f, (1_800_000_000 + m) * 10**9 + i, dr=3, sf=9)))
    return out


@pytest.mark.slow
@pytest.mark.parametrize("workers", [0, 2], ids=["one-process", "2-http-workers"])
def test_kill_9_mid_stream_loses_nothing_acknowledged_and_duplicates_nothing(tmp_path, workers):
    stub_port, port = free_port(), free_port()
    stub = start_command(["webapp-stub", "--port", str(stub_port), "--db", str(tmp_path / "stub.db"),
                          "--token", "wt"], tmp_path / "stub.log", f"http://127.0.0.1:{stub_port}/stub/stats")
    serve = ["serve", "--port", str(port), "--db", str(tmp_path / "c.db"), "--ingest-token", TOKEN,
             "--api-token", TOKEN, "--webapp-url", f"http://127.0.0.1:{stub_port}", "--webapp-token", "wt",
             "--message-timeout", "3600", "--deadline-policy", "fixed", "--workers", str(workers)]
    url = f"http://127.0.0.1:{port}"
    health = url + "/healthz"
    procs = [stub]
    try:
        svc = start_command(serve, tmp_path / "collector.log", health)
        procs.append(svc)
        uplinks = all_uplinks()
        acked: list[tuple[str, int]] = []
        lock = threading.Lock()
        half = len(uplinks) // 2

        def post(item):
            path, body = item
            try:
                r = http("POST", url + path, body, {"Authorization": f"Bearer {TOKEN}"}, timeout=5)
            except OSError:
                return item  # not acknowledged: the network server would have lost it
            if r.status != 202:
                return item
            with lock:
                acked.append((r.json()["message"], r.json()["fragment"]))
                if len(acked) == half:
                    os.kill(svc.pid, signal.SIGKILL)
            return None

        with ThreadPoolExecutor(8) as pool:
            unacked = [x for x in pool.map(post, uplinks) if x is not None]
        svc.wait(timeout=10)
        assert svc.returncode == -signal.SIGKILL
        assert len(acked) >= half and unacked
        # the HTTP workers notice that the process owning the state is gone, and exit
        old_workers = worker_pids(tmp_path / "collector.log")
        assert len(old_workers) == workers
        wait_until(lambda: all(process_gone(p) for p in old_workers), timeout=10, what="the old workers to exit")

        svc = start_command(serve, tmp_path / "collector.log", health)
        procs.append(svc)
        auth = {"Authorization": f"Bearer {TOKEN}"}
        # every acknowledged fragment is there after the restart
        for uid, index in acked:
            m = http("GET", f"{url}/api/messages/{uid}", None, auth).json()
            assert index in [f["index"] for f in m["fragments"]], (uid, index)
        # the network server's later uplinks (here: the ones that were not acknowledged)
        for path, body in unacked:
            r = http("POST", url + path, body, auth)
            assert r.status == 202, r
        wait_until(lambda: http("GET", f"http://127.0.0.1:{stub_port}/stub/stats").json()["documents"] == N_MESSAGES
                   and http("GET", url + "/api/status", None, auth).json()["documents"]["pending"] == 0,
                   what="every document delivered")
        docs = http("GET", f"http://127.0.0.1:{stub_port}/stub/documents").json()["documents"]
        keys = [d["idempotencyKey"] for d in docs]
        assert len(keys) == len(set(keys)) == N_MESSAGES
        msgs = http("GET", url + "/api/messages?limit=1000", None, auth).json()["messages"]
        assert sorted((m["state"], m["delivery"]) for m in msgs) == [("complete", "delivered")] * N_MESSAGES
        # graceful stop on SIGTERM
        svc.send_signal(signal.SIGTERM)
        assert svc.wait(timeout=15) == 0
        assert "event=stopped" in (tmp_path / "collector.log").read_text()
        assert all(process_gone(p) for p in worker_pids(tmp_path / "collector.log"))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
