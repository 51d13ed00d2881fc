"""The repair loop end to end under a hostile radio: the device state machine
(collector.core.device.Device) against the real collector over loopback HTTP and the
stand-in network server, with seeded uplink loss and duplicates, and downlinks lost,
duplicated, delayed and replayed out of order. Every record whose message reached
the collector with k distinct fragments is delivered exactly once and equal to what
was sent; nothing stays open; no downlink carries a command for another device; the
network servers' secrets appear in no log line and no /api answer."""

from __future__ import annotations

import logging
import random
from collections import Counter

import pytest
from lxml import etree

from collector.core import wire, wire2
from collector.core.device import Device
from collector.core.xmldoc import Transport, build_document
from collector.testing.examples import seeded_record
from collector.testing.harness import LiveService, http, wait_until
from collector.testing.netserver_stub import NetServerConfig, NetServerThread
from devicesim.formats import AppUplink, uplink_body

TTS_KEY = "NNSXS.hostile-secret-key"
CS_TOKEN = "cs-hostile-secret-token"
DL_TOKEN = "dl-hostile-secret-token"
SECRETS = (TTS_KEY, CS_TOKEN, DL_TOKEN)
SIZE = 115  # DR3: k = 6 for the 658-byte record
T0_NS = 1_800_000_000 * 10**9
#: DevEUI, ingest format, first msg_id (disjoint ranges: a command for another
#: device's message would name a msg_id this device never used)
DEVICES = [("00000000000B0A01", "ttn", 250), ("00000000000B0A02", "chirpstack", 60),
           ("00000000000B0A03", "generic", 120)]
RECORDS = 7


@pytest.fixture(scope="module")
def ns():
    with NetServerThread(NetServerConfig([TTS_KEY], [CS_TOKEN], [DL_TOKEN])) as n:
        yield n


@pytest.fixture()
def live(tmp_path, ns):
    with LiveService(tmp_path / "c.db", chirpstack_api_url=ns.url, chirpstack_api_token=CS_TOKEN,
                     downlink_url=ns.url + "/downlink", downlink_token=DL_TOKEN) as s:
        yield s


def without_transport(xml: bytes | str) -> bytes:
    root = etree.fromstring(xml.encode() if isinstance(xml, str) else xml)
    for t in root.iter("{*}transport"):
        t.getparent().remove(t)
    return etree.tostring(root, method="c14n")


def settle(live: LiveService, eui: str) -> None:
    def done() -> bool:
        r = live.get(f"/api/devices/{eui}/repair")
        return r.status == 404 or (r.json().get("pending") or {}).get("state") != "pending"
    wait_until(done, what=f"the downlink of {eui} to be handed over")


def test_hostile_radio_every_rebuildable_record_delivered_once(live, ns, caplog):
    caplog.set_level(logging.DEBUG)
    rng = random.Random(20261129)
    devs = {}
    for eui, fmt, first in DEVICES:
        dev = Device(parity=1, polls=3, rounds=3, first_msg_id=first)
        records = [wire.encode_record(seeded_record(int(eui[-4:], 16), s)) for s in range(RECORDS)]
        headers = ns.stub.tts_headers(ns.url, eui, key=TTS_KEY) if fmt == "ttn" else None
        devs[eui] = {"dev": dev, "fmt": fmt, "records": records, "next": 0, "headers": headers, "fcnt": 0,
                     "late": [], "msg": {}, "got": {}, "ids": set()}
    t = 0.0
    for _step in range(2000):
        t += 30.0
        busy = False
        for eui, d in devs.items():
            dev: Device = d["dev"]
            # a new record every so often, so messages overlap and old ones get evicted
            if d["next"] < RECORDS and (dev.idle or rng.random() < 0.25):
                data = d["records"][d["next"]]
                mid = dev.submit(data, SIZE, t)
                d["msg"][mid] = data
                d["got"][mid] = set()
                d["ids"].add(mid)
                d["next"] += 1
            p = dev.next_uplink(t)
            if p is not None:
                busy = True
                if rng.random() >= 0.3:  # 30 % uplink loss
                    for _copy in range(2 if rng.random() < 0.1 else 1):  # duplicates from two gateways
                        d["fcnt"] += 1
                        path, body = uplink_body(d["fmt"], AppUplink(eui, 17, d["fcnt"], p,
                                                                     T0_NS + int(t * 1e9), dr=3, sf=9))
                        r = live.post(path, body, d["headers"])
                        assert r.status == 202, r.body
                    if p[1] != wire2.POLL:
                        d["got"][p[0]].add(p[1])
                    settle(live, eui)
            # the receive windows after the uplink (or an unsolicited late downlink)
            q = http("GET", f"{ns.url}/devices/{eui}/next")
            if q.status == 200:
                payload = bytes.fromhex(q.json()["hex"])
                for c in wire2.decode_downlink(payload):
                    if not isinstance(c, wire2.Redundancy):
                        assert c.msg_id in d["ids"], (eui, c, sorted(d["ids"]))
                fate = rng.random()
                if fate < 0.2:
                    pass  # lost
                elif fate < 0.35:
                    d["late"].append(payload)  # delayed: arrives after a later uplink
                else:
                    dev.downlink(payload, t)
                    if fate > 0.85:
                        dev.downlink(payload, t)  # repeated
                        d["late"].append(payload)  # and replayed much later
            if d["late"] and rng.random() < 0.2:
                dev.downlink(d["late"].pop(rng.randrange(len(d["late"]))), t)
        if not busy and all(x["next"] == RECORDS for x in devs.values()):
            break
    else:
        raise AssertionError("the devices never went idle")
    # every deadline passes: nothing may stay open
    live.advance(86_400)
    live.advance(86_400)
    st = live.get("/api/status").json()
    assert st["openMessages"] == 0
    expected: dict[str, bytes] = {}
    could = 0
    for eui, d in devs.items():
        k = wire2.geometry(len(d["records"][0]), SIZE)[0]
        for mid, data in d["msg"].items():
            if len(d["got"][mid]) >= k:
                rec = wire.decode_record(data)
                key = f"{eui}-{rec.device_serial}-{rec.record_seq}-{rec.start_time}"
                expected[key] = without_transport(build_document(rec, eui, Transport(mid, k, k, 0, 0), True))
                could += 1
    assert could >= RECORDS * len(DEVICES) * 0.8  # the repair loop did its job under 30 % loss
    docs = wait_until(lambda: (lambda ds: ds if {x["idempotencyKey"] for x in ds} >= set(expected) else None)(
        live.stub_documents()), what="every rebuildable record at the Web App")
    keys = Counter(x["idempotencyKey"] for x in docs)
    assert all(n == 1 for n in keys.values())
    for x in docs:
        if x["idempotencyKey"] in expected:
            assert 'complete="true"' in x["xml"]
            assert without_transport(x["xml"]) == expected[x["idempotencyKey"]], x["idempotencyKey"]
    # the collector built each record once: one message per rebuildable msg_id, complete;
    # no second message (partial or incident) from a late, repeated or replayed fragment
    for eui, d in devs.items():
        k = wire2.geometry(len(d["records"][0]), SIZE)[0]
        msgs = live.get(f"/api/messages?device={eui}&limit=1000").json()["messages"]
        per_id = Counter(m["msgId"] for m in msgs)
        for mid in d["msg"]:
            if len(d["got"][mid]) >= k:
                assert per_id[mid] == 1, (eui, mid, [m for m in msgs if m["msgId"] == mid])
                (m,) = [m for m in msgs if m["msgId"] == mid]
                assert m["state"] == "complete" and m["fragmentsExpected"] == k
                assert m["fragmentsReceived"] == k
    assert not [r for r in live.stub_requests() if r.get("status") == 409]
    # no downlink the collector handed over named another device's message
    for req in http("GET", ns.url + "/stub/requests").json()["requests"]:
        assert req["device"] in devs
    # secrets: in no log line, in no /api answer
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "event=poll" in text
    answers = [live.get("/api/status").body, live.get("/metrics").body]
    for eui, _fmt, _first in DEVICES:
        answers.append(live.get(f"/api/devices/{eui}/repair").body)
        for m in live.get(f"/api/messages?device={eui}&limit=5").json()["messages"]:
            answers.append(live.get(f"/api/messages/{m['id']}").body)
    for s in SECRETS:
        assert s not in text
        assert not any(s.encode() in a for a in answers), s
