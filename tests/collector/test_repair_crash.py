"""kill -9 between a poll and its downlink: the 202 promised the NEED, so after the
restart it goes out, the device sends the rows asked for, the record is rebuilt. The
collector and the stand-in network server run as the commands an operator runs."""

from __future__ import annotations

import os
import signal
import subprocess

from collector.core import wire, wire2
from collector.core.device import Device
from collector.testing.examples import example_record
from collector.testing.harness import free_port, http, start_command, stop_commands, wait_until
from devicesim.formats import AppUplink, uplink_body

EUI = "00000000000006C1"
TOKEN = "crash-ingest"
KEY = "NNSXS.crash-key"


def test_kill_9_between_a_poll_and_its_downlink_loses_nothing(tmp_path):
    ns_port, port = free_port(), free_port()
    url = f"http://127.0.0.1:{port}"
    ns = f"http://127.0.0.1:{ns_port}"
    serve = ["serve", "--port", str(port), "--db", str(tmp_path / "c.db"), "--ingest-token", TOKEN,
             "--api-token", TOKEN, "--message-timeout", "3600", "--deadline-policy", "fixed",
             "--downlink-backoff-base", "0.2", "--downlink-backoff-cap", "0.5"]
    prefix = f"{ns}/api/v3/as/applications/loggers/webhooks/collector/devices/{EUI.lower()}/down"
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Downlink-Apikey": KEY, "X-Downlink-Push": prefix + "/push",
               "X-Downlink-Replace": prefix + "/replace"}
    dev = Device(parity=2)
    dev.submit(wire.encode_record(example_record()), 115, 0.0)
    api = {"Authorization": f"Bearer {TOKEN}"}
    procs: list[subprocess.Popen] = []
    n = 0

    def send(payload: bytes) -> dict:
        nonlocal n
        n += 1
        path, body = uplink_body("ttn", AppUplink(EUI, 17, n, payload, (1_800_000_000 + n) * 10**9, dr=3, sf=9))
        r = http("POST", url + path, body, headers)
        assert r.status == 202, r.body
        return r.json()

    try:
        svc = start_command(serve, tmp_path / "collector.log", url + "/healthz")
        procs.append(svc)
        # the message: 8 fragments, 3 lost on the air, then the poll (the network server is down)
        t, sent = 0.0, 0
        while True:
            p = dev.next_uplink(t)
            assert p is not None
            t += 60.0
            sent += 1
            if p[1] == wire2.POLL:
                assert send(p)["status"] == "poll"
                break
            if sent not in (2, 4, 6):  # the others are lost on the air
                send(p)
        view = http("GET", f"{url}/api/devices/{EUI}/repair", None, api).json()
        assert view["pending"]["commands"][0].startswith("NEED")
        os.kill(svc.pid, signal.SIGKILL)
        svc.wait(timeout=10)
        stub = start_command(["netserver-stub", "--port", str(ns_port), "--tts-key", KEY], tmp_path / "ns.log",
                             ns + "/stub/queue")
        procs.append(stub)
        svc = start_command(serve, tmp_path / "collector.log", url + "/healthz")
        procs.append(svc)
        queued = wait_until(lambda: http("GET", ns + "/stub/queue").json().get(EUI), what="the NEED after restart")
        assert queued["hex"].startswith("02")  # NEED msg_id n
        down = http("GET", f"{ns}/devices/{EUI}/next").json()
        dev.downlink(bytes.fromhex(down["hex"]), t)
        while (p := dev.next_uplink(t)) is not None:
            t += 60.0
            send(p)
            wait_until(lambda: (http("GET", f"{url}/api/devices/{EUI}/repair", None, api).json()["pending"]
                                or {}).get("state") != "pending", what="the downlink to be handed over")
            d = http("GET", f"{ns}/devices/{EUI}/next")
            if d.status == 200:
                dev.downlink(bytes.fromhex(d.json()["hex"]), t)
            if dev.idle:
                break
        rows = http("GET", f"{url}/api/messages?device={EUI}", None, api).json()["messages"]
        assert [m["state"] for m in rows] == ["complete"]
        assert dev.stats.needs_served == 1
        reqs = http("GET", ns + "/stub/requests").json()["requests"]
        assert reqs[0]["headers"]["Authorization"] == f"Bearer {KEY}"
    finally:
        stop_commands(procs)


def test_the_webhooks_route_crosses_the_http_workers_channel(tmp_path):
    """With HTTP workers in front, a poll's NEED still goes to the URL and key the
    webhook's X-Downlink-* headers named."""
    ns_port, port = free_port(), free_port()
    url, ns = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ns_port}"
    prefix = f"{ns}/api/v3/as/applications/loggers/webhooks/collector/devices/{EUI.lower()}/down"
    headers = {"Authorization": f"Bearer {TOKEN}", "X-Downlink-Apikey": KEY, "X-Downlink-Push": prefix + "/push"}
    procs = [start_command(["netserver-stub", "--port", str(ns_port), "--tts-key", KEY], tmp_path / "ns.log",
                           ns + "/stub/queue")]
    try:
        procs.append(start_command(["serve", "--port", str(port), "--db", str(tmp_path / "c.db"), "--ingest-token", TOKEN,
                                   "--api-token", TOKEN, "--workers", "2"], tmp_path / "collector.log", url + "/healthz"))
        frags = wire2.encode_message(wire.encode_record(example_record()), 3, 115, 2)  # k = 6
        for i, p in enumerate([*frags[:4], frags[7], wire2.poll(3, 6, 8)]):
            path, body = uplink_body("ttn", AppUplink(EUI, 17, i, p, (1_800_000_000 + i) * 10**9, dr=3, sf=9))
            assert http("POST", url + path, body, headers).status == 202
        queued = wait_until(lambda: http("GET", ns + "/stub/queue").json().get(EUI), what="the NEED")
        assert queued["hex"][:4] == "0203" and queued["via"] == "tts-push"
    finally:
        stop_commands(procs)
