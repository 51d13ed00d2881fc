"""MQTT ingest against a real Mosquitto: ChirpStack and The Things Stack payloads at
QoS 0 and 1, bad payloads, a broker restart, shared subscriptions and partitions
with two collectors. (kill -9 with messages in flight: test_mqtt_crash.py.)"""

from __future__ import annotations

import base64
import json
import logging
import os
import random
import re
import sqlite3

import pytest

from collector.core import wire
from collector.core.device import Device
from collector.core.mqtt import device_partition
from collector.service.keys import METRICS
from collector.service.mqtt import MQTT
from collector.testing.examples import example_record
from collector.testing.harness import LiveService, wait_until
from collector.testing.mosquitto import Broker, close, mosquitto_binary, publish_all, publisher
from devicesim.formats import AppUplink, chirpstack_body, ttn_body

# skipped on a developer's machine without Mosquitto; in CI (which installs it) a missing broker fails
pytestmark = pytest.mark.skipif(mosquitto_binary() is None and not os.environ.get("CI"),
                                reason="mosquitto is not installed (apt-get install mosquitto)")

DEV = "70B3D57ED005A1B2"
T0_NS = 1_800_000_000 * 10**9


def fragments(msg_id: int, seq: int = 4711) -> list[bytes]:
    rec = example_record()
    rec.record_seq = seq
    return wire.fragment(msg_id, wire.encode_record(rec), 115)


def cs_topic(dev: str, event: str = "up") -> str:
    return f"application/0b5e7e1a-app/device/{dev.lower()}/event/{event}"


def cs_message(dev: str, fcnt: int, payload: bytes, fport: int = 16) -> tuple[str, bytes]:
    body = chirpstack_body(AppUplink(dev, fport, fcnt, payload, T0_NS + fcnt * 10**9, dr=3, sf=9))
    return cs_topic(dev), json.dumps(body).encode()


def tts_message(dev: str, fcnt: int, payload: bytes, app: str = "field-loggers@acme") -> tuple[str, bytes]:
    body = ttn_body(AppUplink(dev, 16, fcnt, payload, T0_NS + fcnt * 10**9, dr=3, sf=9,
                              application_id=app.split("@")[0]))
    return f"v3/{app}/devices/dev-{dev.lower()}/up", json.dumps(body).encode()


def metric(s: LiveService, name: str, **labels: str) -> float:
    """A counter's value from /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in labels.items())
    pat = re.compile(rf"^{re.escape(name)}(?:{{{re.escape(want)}}})? (\S+)$" if want else rf"^{re.escape(name)} (\S+)$")
    for line in s.get("/metrics").body.decode().splitlines():
        m = pat.match(line)
        if m:
            return float(m.group(1))
    return 0.0


def mqtt_health(s: LiveService) -> dict:
    return s.get("/healthz").json()["mqtt"]


def delivered(s: LiveService, n: int) -> list[dict]:
    """Wait until the stand-in Web App holds ``n`` documents."""
    def done():
        s.advance(0)
        return len(s.stub_documents()) >= n
    wait_until(done, 20, f"{n} documents at the stand-in Web App")
    return s.stub_documents()


def connected(s: LiveService) -> None:
    wait_until(lambda: mqtt_health(s)["connected"], 15, "the collector to connect to the broker")


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker") as b:
        yield b


@pytest.mark.parametrize("qos", [0, 1])
def test_out_of_order_chirpstack_fragments_give_the_webhooks_document(tmp_path, broker, qos):
    frags = fragments(3)
    order = list(range(len(frags)))
    random.Random(qos).shuffle(order)
    msgs = [cs_message(DEV, 10 + i, frags[i]) for i in order]
    msgs.insert(2, msgs[0])  # the same uplink twice (two integrations, a redelivery)
    with LiveService(tmp_path / "http.db") as h:  # the same uplinks as webhooks: the reference document
        for i in order:
            _, body = cs_message(DEV, 10 + i, frags[i])
            assert h.post("/uplink/chirpstack?event=up", json.loads(body)).status == 202
        (want,) = delivered(h, 1)
    with LiveService(tmp_path / "c.db", mqtt_url=broker.url()) as s:
        connected(s)
        p = publisher(broker.port)
        try:
            publish_all(p, msgs, qos=qos)
            (doc,) = delivered(s, 1)
        finally:
            close(p)
        assert doc["xml"] == want["xml"]
        assert doc["idempotencyKey"] == f"{DEV}-1234567-4711-1795478400"
        assert metric(s, "collector_mqtt_messages_total", outcome="accepted") == len(frags)
        assert metric(s, "collector_mqtt_messages_total", outcome="duplicate") == 1
        assert metric(s, "collector_uplinks_total", integration="mqtt_chirpstack", outcome="accepted") == len(frags)


def test_the_things_stack_with_user_and_api_key_at_qos_0(tmp_path, caplog):
    key = "NNSXS.ABCDEFGHIJKLMNOP.SECRETSECRETSECRET"
    with Broker(tmp_path / "broker", users={"field-loggers@acme": key}) as b:
        frags = fragments(5)
        with LiveService(tmp_path / "c.db", mqtt_url=b.url("field-loggers@acme"), mqtt_integration="ttn",
                         mqtt_protocol="3.1.1") as s:
            connected(s)
            assert mqtt_health(s)["filters"] == ["v3/+/devices/+/up"]
            p = publisher(b.port, username="field-loggers@acme", password=key)
            try:
                publish_all(p, [tts_message(DEV, 20 + i, f) for i, f in reversed(list(enumerate(frags)))], qos=0)
                (doc,) = delivered(s, 1)
            finally:
                close(p)
            assert '<measurementReport' in doc["xml"] and 'complete="true"' in doc["xml"]
        # a wrong key: refused, reported, nothing crashes
        with caplog.at_level(logging.INFO), LiveService(tmp_path / "d.db", mqtt_integration="ttn",
                                                        mqtt_url=f"mqtt://field-loggers@acme:wrong@127.0.0.1:{b.port}") as s:
            wait_until(lambda: mqtt_health(s)["error"], 15, "the refusal to show in /healthz")
            h = mqtt_health(s)
            assert not h["connected"] and "refused" in h["error"]
            assert s.get("/healthz").status == 200  # the HTTP ingest still takes uplinks
    assert key not in caplog.text and "wrong" not in caplog.text
    assert f"mqtt://127.0.0.1:{b.port}" in caplog.text


def test_bad_payloads_are_counted_and_logged_and_the_subscriber_goes_on(tmp_path, broker, caplog):
    frags = fragments(7)
    good = [cs_message(DEV, 30 + i, f) for i, f in enumerate(frags)]
    topic = cs_topic(DEV)
    bad = [
        (topic, b"{not json"),
        (topic, b'["a list"]'),
        (topic, json.dumps({"deviceInfo": {"devEui": DEV.lower()}, "fPort": 16}).encode()),  # no data
        (topic, b"\xff\xfe\x00binary"),
        (topic, b"{" + b" " * 70_000 + b"}"),  # above the body limit
        cs_message(DEV, 90, b"\x00\x01"),  # a fragment header that does not parse
        cs_message(DEV, 91, b"hello", fport=2),  # another port: ignored
        (cs_topic(DEV, "join"), b'{"devEui": "70b3d57ed005a1b2"}'),
        (cs_topic(DEV, "status"), b"{}"),
        ("application/x/gateway/y/event/up", b"{}"),  # not a device topic
    ]
    with caplog.at_level(logging.WARNING, logger="collector"), LiveService(
            tmp_path / "c.db", mqtt_url=broker.url(), mqtt_topic=["application/#"]) as s:
        connected(s)
        p = publisher(broker.port)
        try:
            publish_all(p, [good[0], *bad, *good[1:]])
            (doc,) = delivered(s, 1)
        finally:
            close(p)
        assert 'complete="true"' in doc["xml"]
        count = lambda o: metric(s, "collector_mqtt_messages_total", outcome=o)  # noqa: E731
        assert (count("accepted"), count("rejected"), count("ignored"), count("event_ignored")) == (
            len(frags), 7, 1, 2)
        assert mqtt_health(s)["connected"] and mqtt_health(s)["unacknowledged"] == 0
    assert caplog.text.count("event=mqtt_rejected") + caplog.text.count("event=rejected") == 7
    assert "Traceback" not in caplog.text


def test_broker_restart_reconnects_and_loses_nothing(tmp_path, broker):
    msgs = [[cs_message(f"{d:016X}", 100 * d + i, f) for i, f in enumerate(fragments(d, seq=d))] for d in range(1, 4)]
    with LiveService(tmp_path / "c.db", mqtt_url=broker.url()) as s:
        connected(s)
        p = publisher(broker.port)
        publish_all(p, msgs[0])
        delivered(s, 1)
        close(p)
        broker.restart()
        wait_until(lambda: mqtt_health(s)["reconnects"] == 1 and mqtt_health(s)["connected"], 20,
                   "the collector to reconnect")
        assert mqtt_health(s)["sessionPresent"] is True  # the broker kept the session across its restart
        p = publisher(broker.port)
        publish_all(p, msgs[1])
        delivered(s, 2)
        # the collector away: the broker queues its uplinks in the session, also across a restart
        s.stop_service()
        publish_all(p, msgs[2])
        close(p)
        broker.restart()
        s.start_service()
        docs = delivered(s, 3)
        assert sorted(d["idempotencyKey"] for d in docs) == [f"{d:016X}-1234567-{d}-1795478400" for d in (1, 2, 3)]
        assert metric(s, "collector_mqtt_messages_total", outcome="accepted") == len(msgs[2])


def test_shared_subscription_splits_the_uplinks_between_two_collectors(tmp_path, broker):
    """A shared subscription hands each message to one member: nothing twice, nothing
    lost - and, as Mosquitto does it, no regard for which device sent it."""
    msgs = [cs_message(f"{d:016X}", d, fragments(d)[0]) for d in range(40)]
    with LiveService(tmp_path / "a.db", mqtt_url=broker.url(), mqtt_share="collectors") as a, \
            LiveService(tmp_path / "b.db", mqtt_url=broker.url(), mqtt_share="collectors") as b:
        connected(a)
        connected(b)
        assert mqtt_health(a)["filters"] == ["$share/collectors/application/+/device/+/event/up"]
        p = publisher(broker.port)
        try:
            publish_all(p, msgs)
        finally:
            close(p)
        got = lambda s: metric(s, "collector_mqtt_messages_total", outcome="accepted")  # noqa: E731
        wait_until(lambda: got(a) + got(b) == len(msgs), 15, "every uplink accepted by one of the two")
        assert got(a) > 0 and got(b) > 0
        open_a = {m["devEui"] for m in a.get("/api/messages?state=open&limit=1000").json()["messages"]}
        open_b = {m["devEui"] for m in b.get("/api/messages?state=open&limit=1000").json()["messages"]}
        assert len(open_a) + len(open_b) == len(msgs) and not open_a & open_b


def test_partitions_keep_each_device_at_one_collector(tmp_path, broker):
    devices = [f"70B3D57ED005{d:04X}" for d in range(8)]
    msgs = [cs_message(dev, 10 * d + i, f) for d, dev in enumerate(devices) for i, f in enumerate(fragments(d))]
    random.Random(3).shuffle(msgs)
    with LiveService(tmp_path / "a.db", mqtt_url=broker.url(), mqtt_partition="0/2") as a, \
            LiveService(tmp_path / "b.db", mqtt_url=broker.url(), mqtt_partition="1/2") as b:
        connected(a)
        connected(b)
        p = publisher(broker.port)
        try:
            publish_all(p, msgs)
        finally:
            close(p)
        mine = {i: [dev for dev in devices if device_partition(dev, 2) == i] for i in (0, 1)}
        assert mine[0] and mine[1]
        for i, s in enumerate((a, b)):
            docs = delivered(s, len(mine[i]))
            assert sorted(d["idempotencyKey"].split("-")[0] for d in docs) == sorted(mine[i])
            assert all('complete="true"' in d["xml"] for d in docs)
            assert metric(s, "collector_mqtt_messages_total", outcome="other_partition") == sum(
                len(fragments(0)) for _ in mine[1 - i])


@pytest.mark.parametrize("integration", ["chirpstack", "ttn"])
def test_downlinks_are_published_where_the_network_server_takes_them(tmp_path, broker, integration):
    frag = fragments(9)[0]
    up = cs_message(DEV, 1, frag) if integration == "chirpstack" else tts_message(DEV, 1, frag)
    got: list[tuple[str, dict]] = []
    ns = publisher(broker.port, client_id="ns-downlinks")
    ns.on_message = lambda c, u, m: got.append((m.topic, json.loads(m.payload)))
    ns.subscribe("application/+/device/+/command/down" if integration == "chirpstack" else "v3/+/devices/+/down/#",
                 qos=1)
    with LiveService(tmp_path / "c.db", mqtt_url=broker.url(), mqtt_integration=integration) as s:
        sub = s.app[MQTT]
        assert s.run(sub.send_downlink(DEV, 17, b"\x01")) == "no uplink from this device has come over MQTT yet"
        connected(s)
        publish_all(ns, [up])
        wait_until(lambda: metric(s, "collector_mqtt_messages_total", outcome="accepted") == 1, 10, "the uplink")
        assert s.run(sub.send_downlink(DEV, 17, b"\x01\x02", replace=True)) is None
        wait_until(lambda: got, 10, "the downlink at the network server")
    close(ns)
    (topic, body), = got
    if integration == "chirpstack":
        assert topic == f"application/0b5e7e1a-app/device/{DEV.lower()}/command/down"
        assert body == {"devEui": DEV.lower(), "confirmed": False, "fPort": 17, "data": "AQI="}
    else:
        assert topic == f"v3/field-loggers@acme/devices/dev-{DEV.lower()}/down/replace"
        assert body == {"downlinks": [{"f_port": 17, "frm_payload": "AQI=", "priority": "NORMAL"}]}


def test_an_uplink_the_store_cannot_take_is_not_acknowledged_and_comes_again(tmp_path, broker):
    frags = fragments(11)
    db = tmp_path / "c.db"
    with LiveService(db, mqtt_url=broker.url(), max_pending_writes=1) as s:
        connected(s)
        s.app[MQTT].resume_delay = 0.2
        lock = sqlite3.connect(db, isolation_level=None)
        lock.execute("BEGIN IMMEDIATE")  # the commit waits; the queue behind it is full
        p = publisher(broker.port)
        try:
            publish_all(p, [cs_message(DEV, 40 + i, f) for i, f in enumerate(frags)])
            # (read in-process: /metrics itself waits for the store)
            registry = s.app[METRICS].registry
            wait_until(lambda: registry.get_sample_value("collector_mqtt_messages_total", {"outcome": "unavailable"}),
                       10, "an uplink refused by the store")
            lock.rollback()
            lock.close()
            (doc,) = delivered(s, 1)
        finally:
            close(p)
        assert 'complete="true"' in doc["xml"]
        # the session resumed, and the broker sent the refused ones again
        wait_until(lambda: mqtt_health(s)["reconnects"] >= 1 and mqtt_health(s)["received"] > len(frags), 10,
                   "the refused uplinks again")
        wait_until(lambda: mqtt_health(s)["unacknowledged"] == 0, 10, "every uplink acknowledged")


def test_mqtts_with_the_brokers_certificate(tmp_path):
    with Broker(tmp_path / "broker", tls=True) as b:
        assert b.url().startswith("mqtts://")
        with LiveService(tmp_path / "c.db", mqtt_url=b.url(), mqtt_ca_file=str(b.cert)) as s:
            connected(s)
            p = publisher(b.port, ca_file=b.cert)
            try:
                publish_all(p, [cs_message(DEV, 50 + i, f) for i, f in enumerate(fragments(12))])
                delivered(s, 1)
            finally:
                close(p)
        # without the broker's certificate the collector does not trust it
        with LiveService(tmp_path / "d.db", mqtt_url=b.url()) as s:
            wait_until(lambda: mqtt_health(s)["error"], 15, "the failed handshake to show")
            assert not mqtt_health(s)["connected"]


def test_v2_repair_loop_over_mqtt(tmp_path, broker):
    """A v2 device behind ChirpStack's MQTT integration: 3 of its 8 uplinks lost, its
    poll gets a NEED published to command/down, the fresh rows rebuild the record."""
    eui = "00000000000003B1"
    got: list[bytes] = []
    markers: list[str] = []
    ns = publisher(broker.port, client_id="chirpstack")

    def on_message(c, u, m):
        if m.topic.startswith("test/"):
            markers.append(m.topic)
        else:
            body = json.loads(m.payload)
            assert m.topic == f"application/0b5e7e1a-app/device/{eui.lower()}/command/down"
            assert (body["devEui"], body["fPort"], body["confirmed"]) == (eui.lower(), 17, False)
            got.append(base64.b64decode(body["data"]))
    ns.on_message = on_message
    ns.subscribe([("application/+/device/+/command/down", 1), ("test/#", 1)])
    device = Device(parity=2)
    device.submit(wire.encode_record(example_record()), 115, 0.0)
    with LiveService(tmp_path / "c.db", mqtt_url=broker.url(), stub=False) as s:
        connected(s)
        n, t, lose = 0, 0.0, {2, 5, 8}
        while (p := device.next_uplink(t)) is not None and n < 50:
            n += 1
            if n not in lose:
                publish_all(ns, [(cs_topic(eui), json.dumps(chirpstack_body(
                    AppUplink(eui, 17, n, p, T0_NS + n * 10**9, dr=3, sf=9))).encode())])
                sent = n - len(lose & set(range(n)))
                wait_until(lambda sent=sent: mqtt_health(s)["received"] == sent and
                           mqtt_health(s)["unacknowledged"] == 0, 10, "the uplink committed")

                def handed_over() -> bool:
                    r = s.get(f"/api/devices/{eui}/repair")
                    return r.status == 404 or (r.json().get("pending") or {}).get("state") != "pending"
                wait_until(handed_over, 10, "the downlink handed over")
                # the broker passes on what it took before this marker
                publish_all(ns, [(f"test/{n}", b"")])
                wait_until(lambda n=n: f"test/{n}" in markers, 10, "the marker")
            while got:
                device.downlink(got.pop(0), t)
            t += 60.0
        assert device.idle and device.stats.needs_served == 1 and device.stats.acked == 1
        (m,) = s.get(f"/api/messages?device={eui}").json()["messages"]
        assert m["state"] == "complete"
    close(ns)
