"""kill -9 of the collector at seeded points of repair rounds (right after a poll was
answered 202 and before its downlink went out, and in the middle of an uplink's
request and commit): nothing acknowledged is lost, no message is built twice, and
the downlink still due goes out after the restart. The collector and the stand-in
network server run as the commands an operator runs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
from collections import Counter

from collector.core import wire, wire2
from collector.core.device import Device
from collector.testing.examples import seeded_record
from collector.testing.harness import free_port, http, start_command, stop_commands, wait_until
from devicesim.formats import AppUplink, uplink_body

EUI = "00000000000C0A51"
TOKEN = "crash-ingest-token"
KEY = "NNSXS.crash-hostile-key"
SIZE = 115  # k = 6
#: the uplinks (counted as they reach the collector) whose request is cut by a kill -9
MID_REQUEST = (5,)


def test_kill_9_during_repair_rounds_loses_nothing(tmp_path):
    rng = random.Random(7)
    ns_port, port = free_port(), free_port()
    url, ns = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ns_port}"
    serve = ["serve", "--port", str(port), "--db", str(tmp_path / "c.db"), "--ingest-token", TOKEN,
             "--api-token", TOKEN, "--message-timeout", "3600", "--deadline-policy", "fixed",
             "--downlink-backoff-base", "0.1", "--downlink-backoff-cap", "0.3"]
    prefix = f"{ns}/api/v3/as/applications/loggers/webhooks/collector/devices/{EUI.lower()}/down"
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Downlink-Apikey": KEY, "X-Downlink-Push": prefix + "/push",
               "X-Downlink-Replace": prefix + "/replace"}
    api = {"Authorization": f"Bearer {TOKEN}"}
    log = tmp_path / "collector.log"
    procs: list[subprocess.Popen] = []
    dev = Device(parity=1, polls=3, rounds=3, first_msg_id=254)
    records = {}
    got: dict[int, set[int]] = {}
    kills = Counter()
    n = 0
    try:
        procs.append(start_command(["netserver-stub", "--port", str(ns_port), "--tts-key", KEY], tmp_path / "ns.log",
                                   ns + "/stub/queue"))
        svc = start_command(serve, log, url + "/healthz")
        procs.append(svc)

        def restart() -> None:
            nonlocal svc
            svc.wait(timeout=10)
            svc = start_command(serve, log, url + "/healthz")
            procs.append(svc)

        def post(payload: bytes, hard_kill: bool) -> None:
            """Deliver one uplink as a network server does: retried until a 202."""
            nonlocal n
            n += 1
            path, body = uplink_body("ttn", AppUplink(EUI, 17, n, payload, (1_800_000_000 + n) * 10**9, dr=3, sf=9))
            if hard_kill:  # in the middle of the request and its commit
                timer = threading.Timer(rng.uniform(0.0, 0.004), os.kill, (svc.pid, signal.SIGKILL))
                timer.start()
                try:
                    r = http("POST", url + path, body, headers, timeout=5)
                except OSError:
                    r = None
                timer.join()
                kills["mid-request"] += 1
                restart()
                if r is not None and r.status == 202:
                    return
            r = http("POST", url + path, body, headers)
            assert r.status == 202, r.body

        t, uplinks = 0.0, 0
        for seq in range(3):
            data = wire.encode_record(seeded_record(0xC0A5, seq))
            records[dev.submit(data, SIZE, t)] = data
        for _step in range(400):
            p = dev.next_uplink(t)
            if p is None:
                if dev.idle:
                    break
            else:
                t += 60.0
                if rng.random() >= 0.25:  # uplink loss on the air
                    uplinks += 1
                    post(p, hard_kill=uplinks in MID_REQUEST)
                    if p[1] != wire2.POLL:
                        got.setdefault(p[0], set()).add(p[1])
                    elif kills["after-poll"] < 2:
                        # the poll's answer is committed (202); killed before the downlink goes out
                        os.kill(svc.pid, signal.SIGKILL)
                        kills["after-poll"] += 1
                        restart()
                        # the answer the 202 promised goes out after the restart, unasked
                        wait_until(lambda: http("GET", ns + "/stub/queue").json().get(EUI),
                                   what="the poll's answer after the restart")
            t += 60.0
            # the downlink the network server holds reaches the device in its receive windows
            queued = wait_until(lambda: (http("GET", f"{url}/api/devices/{EUI}/repair", None, api).json()
                                         .get("pending") or {}).get("state") != "pending", what="the hand-over")
            assert queued
            d = http("GET", f"{ns}/devices/{EUI}/next")
            if d.status == 200:
                dev.downlink(bytes.fromhex(d.json()["hex"]), t)
        else:
            raise AssertionError("the device never went idle")
        assert kills["after-poll"] == 2 and kills["mid-request"] == 1, kills
        msgs = http("GET", f"{url}/api/messages?device={EUI}&limit=1000", None, api).json()["messages"]
        per_id = Counter(m["msgId"] for m in msgs)
        rebuildable = [mid for mid in records if len(got.get(mid, ())) >= 6]
        assert len(rebuildable) == len(records)
        for mid in rebuildable:
            assert per_id[mid] == 1, (mid, [m for m in msgs if m["msgId"] == mid])
            (m,) = [m for m in msgs if m["msgId"] == mid]
            assert m["state"] == "complete", m
        assert dev.stats.acked == len(rebuildable) and dev.stats.given_up == 0
    finally:
        stop_commands(procs)
