"""End to end over loopback: uplinks in, documents at the stand-in Web App, with the
service's clock moved by POST /admin/clock (virtual time)."""

from __future__ import annotations

import random

from lxml import etree

from collector.core import wire
from collector.core.xmldoc import NAMESPACE, xsd_validate
from collector.testing.examples import example_record
from collector.testing.harness import WEBAPP_TOKEN, LiveService
from devicesim.formats import AppUplink, uplink_body

DEV = "70B3D57ED005A1B2"
T0_NS = 1_800_000_000 * 10**9
FORMATS = ("ttn", "chirpstack", "generic")


def message(msg_id: int, size: int = 115) -> list[bytes]:
    return wire.fragment(msg_id, wire.encode_record(example_record()), size)


def bodies(payloads: list[bytes], dev: str = DEV, order: list[int] | None = None, sf: int = 9, dr: int = 3):
    order = list(range(len(payloads))) if order is None else order
    return [uplink_body(FORMATS[n % 3], AppUplink(dev, 16, 10 + i, payloads[i], T0_NS + i * 10**9, dr=dr, sf=sf,
                                                  uid=n))
            for n, i in enumerate(order)]


def root(xml: str):
    return etree.fromstring(xml.encode())


def transport(xml: str):
    return root(xml).find(f"{{{NAMESPACE}}}transport")


def test_out_of_order_and_duplicates_across_formats_give_one_document(tmp_path):
    frags = message(3)
    order = list(range(len(frags)))
    random.Random(5).shuffle(order)
    order = order[:3] + [order[0], order[1]] + order[3:]  # two duplicates in the middle
    with LiveService(tmp_path / "c.db") as s:
        answers = s.post_uplinks(bodies(frags, order=order))
        assert [a.json()["status"] for a in answers] == ["accepted"] * 3 + ["duplicate"] * 2 + ["accepted"] * 3
        s.advance(0)  # run the delivery due now
        docs = s.stub_documents()
        assert len(docs) == 1
        doc = docs[0]
        assert doc["idempotencyKey"] == f"{DEV}-1234567-4711-1795478400"
        assert doc["token"] == WEBAPP_TOKEN
        assert xsd_validate(doc["xml"].encode()) == []
        assert root(doc["xml"]).get("complete") == "true"
        t = transport(doc["xml"])
        assert (t.get("messageId"), t.get("fragmentsExpected"), t.get("fragmentsReceived")) == ("3", "6", "6")
        msgs = s.get("/api/messages").json()["messages"]
        assert [(m["state"], m["delivery"]) for m in msgs] == [("complete", "delivered")]


def test_lost_fragment_closes_at_the_deadline_as_a_partial_document(tmp_path):
    frags = message(4, size=51)  # 14 fragments; the last carries the config and site blocks
    with LiveService(tmp_path / "c.db", deadline_policy="fixed", message_timeout=600) as s:
        s.post_uplinks(bodies(frags, order=list(range(13))))  # fragment 13 is lost
        assert s.advance(599)["closed"] == 0
        assert s.get("/api/messages?state=open").json()["messages"][0]["fragmentsReceived"] == 13
        assert s.advance(1)["closed"] == 1
        (doc,) = s.stub_documents()
        assert root(doc["xml"]).get("complete") == "false"
        t = transport(doc["xml"])
        assert (t.get("missingFragments"), t.get("missingBlocks")) == ("13", "config site")
        (m,) = s.get("/api/messages?state=partial").json()["messages"]
        assert (m["delivery"], m["closeReason"]) == ("delivered", "deadline")
        detail = s.get(f"/api/messages/{m['id']}").json()
        assert [f["index"] for f in detail["fragments"]] == list(range(13))
        assert detail["missingFragments"] == [13]


def test_lost_required_bytes_are_an_incident(tmp_path):
    frags = message(4)  # at S=115 fragment 3 carries samples of the required section
    with LiveService(tmp_path / "c.db", deadline_policy="fixed", message_timeout=600) as s:
        s.post_uplinks(bodies(frags, order=[0, 1, 2, 4, 5]))
        s.advance(600)
        assert s.stub_documents() == []
        (inc,) = s.get("/api/incidents").json()["incidents"]
        assert inc["code"] == "required_missing"


def test_lost_fragment_zero_is_an_incident_and_nothing_is_delivered(tmp_path):
    frags = message(5)
    with LiveService(tmp_path / "c.db", deadline_policy="fixed", message_timeout=60) as s:
        s.post_uplinks(bodies(frags, order=[1, 2, 3, 4, 5]))
        s.advance(61)
        assert s.stub_documents() == []
        (inc,) = s.get("/api/incidents").json()["incidents"]
        assert inc["code"] == "fragment0_missing" and inc["devEui"] == DEV
        full = s.get(f"/api/incidents/{inc['id']}").json()
        assert [f["index"] for f in full["outcome"]["fragments"]] == [1, 2, 3, 4, 5]
        (m,) = s.get("/api/messages?state=incident").json()["messages"]
        assert m["delivery"] is None


def test_adaptive_deadline_waits_longer_for_a_slow_data_rate(tmp_path):
    frags = message(6, size=51)  # 14 fragments at SF12: about an hour under 1 % duty cycle
    with LiveService(tmp_path / "c.db", message_timeout=900) as s:
        s.post_uplinks(bodies(frags, order=list(range(13)), sf=12, dr=0))  # the last one not yet
        s.advance(901)
        (m,) = s.get("/api/messages").json()["messages"]
        assert m["state"] == "open"  # a fixed 900 s timeout would have cut it off
        s.post_uplinks(bodies(frags, order=[13], sf=12, dr=0))
        s.advance(0)
        (m,) = s.get("/api/messages").json()["messages"]
        assert (m["state"], m["delivery"]) == ("complete", "delivered")


def test_open_messages_survive_a_restart_with_their_deadline(tmp_path):
    frags = message(7, size=51)
    with LiveService(tmp_path / "c.db", deadline_policy="fixed", message_timeout=300) as s:
        s.post_uplinks(bodies(frags, order=list(range(10))))
        s.advance(100)
        s.restart_service()
        (m,) = s.get("/api/messages").json()["messages"]
        assert m["state"] == "open" and m["fragmentsReceived"] == 10
        # a duplicate of a fragment from before the restart is still recognised
        assert s.post_uplinks(bodies(frags, order=[1]))[0].json()["status"] == "duplicate"
        s.post_uplinks(bodies(frags, order=[10, 11, 12]))
        assert s.advance(199)["closed"] == 0
        assert s.advance(1)["closed"] == 1
        (doc,) = s.stub_documents()
        assert transport(doc["xml"]).get("missingFragments") == "13"


def test_device_token_from_the_registry(tmp_path):
    reg = tmp_path / "devices.csv"
    reg.write_text(f"dev_eui,token,name\n{DEV.lower()},dev-token-1,logger-0042\n")
    with LiveService(tmp_path / "c.db", devices_file=str(reg)) as s:
        s.stub.cfg.tokens.append("dev-token-1")
        s.post_uplinks(bodies(message(8)))
        s.advance(0)
        (doc,) = s.stub_documents()
        assert doc["token"] == "dev-token-1"


def test_health_and_metrics(tmp_path):
    with LiveService(tmp_path / "c.db") as s:
        s.post_uplinks(bodies(message(9)))
        s.advance(0)
        h = s.get("/healthz").json()
        assert h["status"] == "ok" and h["openMessages"] == 0 and h["circuit"] == "closed"
        text = s.get("/metrics").body.decode()
        for line in ('collector_uplinks_total{integration="ttn",outcome="accepted"} 2.0',
                     'collector_messages_closed_total{reason="complete",state="complete"} 1.0',
                     'collector_delivery_attempts_total{result="delivered",status="2xx"} 1.0',
                     "collector_open_messages 0.0", "collector_delivery_queue_depth 0.0",
                     "collector_ingest_seconds_bucket"):
            assert line in text, line
