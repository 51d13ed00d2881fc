"""The v2 repair loop through the running collector over real HTTP: the device state
machine (collector.core.device) plays the device, the stand-in network server carries
the downlinks, every ingest format with its network server's downlink route."""

from __future__ import annotations

import subprocess
import sys

import pytest

from collector.core import wire
from collector.core.device import Device
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, http, wait_until
from collector.testing.netserver_stub import NetServerConfig, NetServerThread
from devicesim.formats import AppUplink, uplink_body

DATA = wire.encode_record(example_record())
SIZE = 115  # DR3: k = 6
T0_NS = 1_800_000_000 * 10**9
TTS_KEY = "NNSXS.stub-key"
CS_TOKEN = "cs-token"
DL_TOKEN = "dl-token"


@pytest.fixture(scope="module")
def ns():
    with NetServerThread(NetServerConfig([TTS_KEY], [CS_TOKEN], [DL_TOKEN])) as n:
        yield n


@pytest.fixture(scope="module")
def live(tmp_path_factory, ns):
    with LiveService(tmp_path_factory.mktemp("repair") / "c.db", stub=False, chirpstack_api_url=ns.url,
                     chirpstack_api_token=CS_TOKEN, downlink_url=ns.url + "/downlink",
                     downlink_token=DL_TOKEN) as s:
        yield s


def settle(live: LiveService, eui: str) -> None:
    """Wait until the collector has handed the device's downlink (if any) over."""
    def done() -> bool:
        r = live.get(f"/api/devices/{eui}/repair")
        return r.status == 404 or (r.json().get("pending") or {}).get("state") != "pending"
    wait_until(done, what=f"the downlink of {eui} to be handed over")


def play(live: LiveService, ns: NetServerThread, fmt: str, eui: str, device: Device, lose: set[int],
         headers: dict | None = None, start: int = 0) -> int:
    """Run the device until it is idle: uplink number n (from ``start``) is lost when
    in ``lose``; after each uplink the device gets what the network server holds."""
    n, t = start, 0.0
    while n < start + 300:
        p = device.next_uplink(t)
        if p is None:
            return n
        n += 1
        if n not in lose:
            path, body = uplink_body(fmt, AppUplink(eui, 17, n, p, T0_NS + n * 10**9, dr=3, sf=9, uid=n))
            r = live.post(path, body, headers)
            assert r.status == 202, r.body
            settle(live, eui)
        d = http("GET", f"{ns.url}/devices/{eui}/next")
        if d.status == 200:
            device.downlink(bytes.fromhex(d.json()["hex"]), t)
        t += 60.0
    raise AssertionError("the device never went idle")


def route_headers(ns: NetServerThread, fmt: str, eui: str) -> dict | None:
    return ns.stub.tts_headers(ns.url, eui, key=TTS_KEY) if fmt == "ttn" else None


def message_of(live: LiveService, eui: str) -> dict:
    rows = live.get(f"/api/messages?device={eui}").json()["messages"]
    assert len(rows) == 1, rows
    return live.get(f"/api/messages/{rows[0]['id']}").json()


@pytest.mark.parametrize("fmt", ["ttn", "chirpstack", "generic"])
def test_poll_need_fresh_rows_document(live, ns, fmt):
    """3 of 8 fragments lost (k = 6, r = 2): the poll gets a NEED through the format's
    network server, the device sends fresh rows, the record is rebuilt."""
    eui = {"ttn": "00000000000003A1", "chirpstack": "00000000000003A2", "generic": "00000000000003A3"}[fmt]
    dev = Device(parity=2)
    dev.submit(DATA, SIZE, 0.0)
    play(live, ns, fmt, eui, dev, lose={2, 5, 8}, headers=route_headers(ns, fmt, eui))
    assert dev.stats.needs_served == 1 and dev.stats.acked == 1 and dev.stats.given_up == 0
    m = message_of(live, eui)
    assert m["state"] == "complete" and m["complete"] is True
    rep = m["repair"]
    assert rep["k"] == 6 and rep["repairRounds"] == 1
    assert len(rep["dataHeld"]) + len(rep["parityRowsHeld"]) >= 6
    assert any(c.startswith("NEED") for d in rep["downlinks"] for c in d["commands"])
    # the network server saw its own shape, authorised
    reqs = [r for r in http("GET", ns.url + "/stub/requests").json()["requests"] if r["device"] == eui]
    assert reqs and all(r["status"] in (200, 202) for r in reqs)
    if fmt == "ttn":
        assert reqs[0]["path"].endswith("/down/push") and reqs[0]["headers"]["Authorization"] == f"Bearer {TTS_KEY}"
        assert reqs[0]["body"]["downlinks"][0]["f_port"] == 17
    elif fmt == "chirpstack":
        assert reqs[0]["path"] == f"/api/devices/{eui.lower()}/queue"
        assert reqs[0]["headers"]["Authorization"] == f"Bearer {CS_TOKEN}"
        assert reqs[0]["body"]["queueItem"]["fPort"] == 17
    else:
        assert reqs[0]["body"]["devEui"] == eui and reqs[0]["headers"]["Authorization"] == f"Bearer {DL_TOKEN}"
    # the key is never shown
    view = live.get(f"/api/devices/{eui}/repair")
    assert view.status == 200 and TTS_KEY.encode() not in view.body


@pytest.mark.parametrize("lose", [{1, 2}, {5, 6}, {7, 8}, {3, 7}, {1, 8}],
                         ids=["data01", "data45", "parity", "data2-parity0", "ends"])
def test_loss_patterns_rebuilt_from_parity_without_a_route(live, ns, lose):
    """No downlink key on the webhook: repair is unavailable, yet any 2 of 8 lost is
    rebuilt from the 2 parity rows, and the API says why repair is unavailable."""
    eui = f"00000000000004{sorted(lose)[0]:01X}{sorted(lose)[1]:01X}"
    dev = Device(parity=2, polls=1, rounds=0)
    dev.submit(DATA, SIZE, 0.0)
    play(live, ns, "ttn", eui, dev, lose=lose)
    m = message_of(live, eui)
    assert m["state"] == "complete" and m["fragmentsExpected"] == 6
    data_lost = sorted(i - 1 for i in lose if i <= 6)
    assert m["repair"]["dataHeld"] == [i for i in range(6) if i not in data_lost]
    assert len(m["repair"]["parityRowsHeld"]) == len(data_lost)
    view = live.get(f"/api/devices/{eui}/repair").json()
    assert view["repair"] == "unavailable" and "X-Downlink-Apikey" in view["reason"]


def test_a_mixed_v1_v2_fleet(live, ns):
    v1, v2 = "00000000000005B1", "00000000000005B2"
    dev = Device(parity=2)
    dev.submit(DATA, SIZE, 0.0)
    for i, f in enumerate(wire.fragment(9, DATA, SIZE)):
        path, body = uplink_body("ttn", AppUplink(v1, 16, i, f, T0_NS + i * 10**9, dr=3, sf=9, uid=i))
        assert live.post(path, body).status == 202
    play(live, ns, "ttn", v2, dev, lose={3, 4, 6}, headers=route_headers(ns, "ttn", v2))
    a, b = message_of(live, v1), message_of(live, v2)
    assert a["state"] == b["state"] == "complete"
    assert "repair" not in a and b["repair"]["k"] == 6
    assert live.get(f"/api/devices/{v1}/repair").status == 404


def test_metrics_status_and_the_cli(live):
    text = live.get("/metrics").body.decode()
    for name in ("collector_records_rebuilt_with_parity_total", "collector_repair_polls_total",
                 'collector_repair_commands_total{command="need"}', 'collector_downlinks_total{outcome="sent"}',
                 "collector_repair_unavailable_total", "collector_device_redundancy{"):
        assert name in text, name
    rebuilt = next(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("collector_records_rebuilt_with_parity_total"))
    assert rebuilt >= 1
    st = live.get("/api/status").json()["repair"]
    assert st["devices"] >= 1 and st["repairUnavailable"] >= 1
    out = subprocess.run([sys.executable, "-m", "collector", "status", "--db", live.settings["db"]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "v2 devices:" in out.stdout and "NEEDs" in out.stdout and "downlinks:" in out.stdout


def test_heavy_loss_steers_the_devices_parity_up(live, ns):
    """A quarter of the uplinks lost: NEEDs repair each message, and the collector's
    REDUNDANCY reaches the device, which sends more parity from then on."""
    eui = "00000000000007D1"
    dev = Device(parity=1)
    for _ in range(6):
        dev.submit(DATA, SIZE, 0.0)
    play(live, ns, "ttn", eui, dev, lose=set(range(4, 400, 4)), headers=route_headers(ns, "ttn", eui))
    assert dev.stats.redundancy_changes >= 1 and dev.parity > 1
    rows = live.get(f"/api/messages?device={eui}").json()["messages"]
    assert sorted(m["state"] for m in rows) == ["complete"] * 6
    view = live.get(f"/api/devices/{eui}/repair").json()
    assert view["parityWanted"] == dev.parity
    metric = f'collector_device_redundancy{{dev_eui="{eui}"}} {float(dev.parity)}'
    assert metric in live.get("/metrics").body.decode()


def test_a_need_lost_on_the_air_is_sent_again_on_a_later_uplink(live, ns):
    """Every answer to message 0's three polls is lost on the air (the network server
    took them; the device never heard them): the device moves on to message 1, and the
    collector, seeing no repair rows, sends the NEED again in message 1's downlink, so
    message 0 is rebuilt instead of waiting on the device until it is evicted."""
    eui = "00000000000008E1"
    dev = Device(parity=0)
    dev.submit(DATA, SIZE, 0.0)
    dev.submit(DATA, SIZE, 0.0)
    n, t = 0, 0.0
    while (p := dev.next_uplink(t)) is not None and n < 100:
        n += 1
        if n != 2:  # data fragment 1 of message 0 is lost
            path, body = uplink_body("generic", AppUplink(eui, 17, n, p, T0_NS + n * 10**9, dr=3, sf=9, uid=n))
            assert live.post(path, body).status == 202
            settle(live, eui)
        d = http("GET", f"{ns.url}/devices/{eui}/next")
        if d.status == 200 and n > 9:  # uplinks 7-9 are message 0's polls: their answers are lost
            dev.downlink(bytes.fromhex(d.json()["hex"]), t)
        t += 60.0
    assert dev.stats.needs_served == 1 and dev.stats.evicted == 0
    rows = live.get(f"/api/messages?device={eui}").json()["messages"]
    assert sorted(m["state"] for m in rows) == ["complete", "complete"]
    assert live.get(f"/api/devices/{eui}/repair").json()["needs_repeated"] == 1
