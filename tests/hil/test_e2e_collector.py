"""The whole pipeline without a radio: driver ↔ emulated module on a real
pseudo-terminal → the network-server model → the real collector over loopback HTTP
(real SQLite file) → documents at the stand-in Web App, compared with the document
built from the record that was sent."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner
from lxml import etree

from collector.core import wire, xmldoc
from collector.core.timefmt import parse_ms
from collector.testing.harness import API_TOKEN, INGEST_TOKEN, LiveService
from devicesim.config import Latency, NetworkConfig
from devicesim.network import NetworkServer
from hil import bench
from hil.bridge import Forwarder, frame_to_uplink
from hil.cli import main
from hil.emulator import TxFrame

pytestmark = pytest.mark.timeout(60)

EUI = {"rn2483": "70B3D57ED00E2E01", "rak3172": "70B3D57ED00E2E02"}
FAST_CLI = ["--command-timeout", "1.5", "--join-timeout", "2", "--tx-timeout", "1"]
NS_ = f"{{{xmldoc.NAMESPACE}}}"


@pytest.fixture
def service(tmp_path):
    with LiveService(tmp_path / "collector.db") as s:
        yield s


def documents(service: LiveService, n: int, until) -> dict[str, str]:
    """Wait for ``n`` documents at the stand-in Web App; ``{idempotency key: xml}``."""

    def got() -> list[dict] | None:
        service.advance(0)  # run whatever delivery is due on the manual clock
        docs = service.stub_documents()
        return docs if len(docs) >= n else None

    docs = until(got, 15, f"{n} document(s) at the Web App")
    assert len(docs) == n, [d["idempotencyKey"] for d in docs]
    return {d["idempotencyKey"]: d["xml"] for d in docs}


def expected_document(dev_eui: str, msg_id: int, record: bytes, frames: list[TxFrame],
                      received: list[int] | None = None) -> tuple[str, str]:
    """(idempotency key, document) the collector must make of ``record`` sent as
    ``frames``, received by the network server when they ended (or at ``received``, ms)."""
    rec = wire.decode_record(record)
    received = received or [frame_to_uplink(f).received_ms for f in frames]
    n = len(frames)
    transport = xmldoc.Transport(msg_id, n, n, min(received), max(received))
    return xmldoc.idempotency_key(dev_eui, rec), xmldoc.build_document(rec, dev_eui, transport, True).decode()


def frames_of(frames: list[TxFrame], msg_id: int) -> list[TxFrame]:
    return [f for f in frames if wire.parse_fragment(f.payload).msg_id == msg_id]


@pytest.mark.parametrize(("module", "fmt"), [("rn2483", "ttn"), ("rak3172", "chirpstack")])
def test_full_and_short_records_arrive_as_documents(rig_factory, service, until, module, fmt):
    """US915: a 658-byte record in 74 fragments at DR0 and in 3 at DR3, RN2903 and RAK3172 (band 5)."""
    eui = EUI[module]
    fwd = Forwarder(service.url, fmt, token=INGEST_TOKEN)
    try:
        rig = rig_factory(module, "US915", on_tx=fwd.submit, dev_eui=eui)
        rig.modem.join()
        records = {}
        for msg_id, dr, seq, frags in ((40, 0, 1, 74), (41, 3, 2, 3)):
            rig.modem.set_dr(dr)
            records[msg_id] = wire.encode_record(bench.make_record(0xE2E, seq))
            sent = bench.send_record(rig.modem, msg_id, records[msg_id])
            assert (sent.msg_id, sent.dr, sent.fragments, sent.restarts) == (msg_id, dr, frags, 0)
        assert fwd.drain(15), "the forwarder did not post every uplink"
    finally:
        fwd.close()
    frames = rig.model.tx_log
    assert len(frames) == 77 and [f.fcnt for f in frames] == list(range(77))
    assert [d.status for d in fwd.deliveries] == [202] * 77
    assert {json.loads(d.reply)["status"] for d in fwd.deliveries} == {"accepted"}
    assert fwd.ns.stats.accepted == 77 and fwd.ns.stats.dropped_fcnt == 0

    docs = documents(service, 2, until)
    for msg_id, record in records.items():
        key, xml = expected_document(eui, msg_id, record, frames_of(frames, msg_id))
        assert docs[key] == xml
        assert xmldoc.xsd_validate(xml.encode()) == []
    msgs = service.get(f"/api/messages?device={eui}").json()["messages"]
    assert sorted((m["msgId"], m["state"], m["fragmentsReceived"], m["delivery"]) for m in msgs) == [
        (40, "complete", 74, "delivered"), (41, "complete", 3, "delivered")]


def test_rejoin_opens_a_new_session_and_a_replayed_frame_is_dropped(rig_factory, service, until):
    """The network-server model's frame-counter check applies: counters restart at a
    join without losing uplinks, and an old counter in the same session is dropped."""
    eui = EUI["rn2483"]
    fwd = Forwarder(service.url, "generic", token=INGEST_TOKEN)
    try:
        rig = rig_factory("rn2483", "US915", on_tx=fwd.submit, dev_eui=eui, dr=3)
        records = {}
        for msg_id, seq in ((7, 1), (8, 2)):
            rig.modem.join()  # each join restarts the module's frame counter at 0
            records[msg_id] = wire.encode_record(bench.make_record(0xE2E, seq))
            bench.send_record(rig.modem, msg_id, records[msg_id])
        assert fwd.drain(10)
        frames = list(rig.model.tx_log)
        assert [f.fcnt for f in frames] == [0, 1, 2, 0, 1, 2]
        fwd.submit(frames[4])  # a replay of fCnt 1 after fCnt 2 of the same session
        assert fwd.drain(10)
    finally:
        fwd.close()
    assert (fwd.ns.stats.accepted, fwd.ns.stats.dropped_fcnt) == (6, 1)
    assert len(fwd.deliveries) == 6
    docs = documents(service, 2, until)
    for msg_id, record in records.items():
        key, xml = expected_document(eui, msg_id, record, frames_of(frames, msg_id))
        assert docs[key] == xml


def test_network_jitter_and_duplicates_still_give_one_complete_document(rig_factory, service, until):
    """Delivery latency with jitter (uplinks arrive out of order) and duplicate
    deliveries: the collector takes the copies as duplicates and makes one document."""
    eui = EUI["rak3172"]
    cfg = NetworkConfig(dedup_window_s=0.05, backhaul=Latency(0.0, 0.0), delivery=Latency(0.01, 0.1),
                        duplicate_p=0.5, duplicate_delay=Latency(0.05, 0.1))
    fwd = Forwarder(service.url, "ttn", token=INGEST_TOKEN, network_server=NetworkServer(cfg, seed=3))
    try:
        rig = rig_factory("rak3172", "US915", on_tx=fwd.submit, dev_eui=eui, dr=1)
        rig.modem.join()
        record = wire.encode_record(bench.make_record(0xE2E, 5))
        sent = bench.send_record(rig.modem, 60, record)
        assert fwd.drain(15)
    finally:
        fwd.close()
    frames = rig.model.tx_log
    stats = fwd.ns.stats
    assert len(frames) == sent.fragments == 13
    assert stats.accepted == 13 and stats.duplicates > 0
    assert len(fwd.deliveries) == 13 + stats.duplicates
    statuses = [json.loads(d.reply)["status"] for d in fwd.deliveries]
    assert statuses.count("accepted") == 13 and statuses.count("duplicate") == stats.duplicates
    docs = documents(service, 1, until)
    # the network server received each frame when its dedup window closed
    received = [parse_ms(d.body["uplink_message"]["received_at"]) for d in fwd.deliveries]
    assert min(received) >= frames[0].time_ns // 1_000_000 + 50
    key, xml = expected_document(eui, 60, record, frames, received)
    assert docs == {key: xml}


@pytest.fixture
def emulate_proc():
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> str:
        proc = subprocess.Popen([sys.executable, "-m", "hil.cli", "emulate", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs.append(proc)
        line = proc.stdout.readline().strip() if proc.stdout else ""
        assert line.startswith("/dev/"), f"hil emulate printed {line!r}: {proc.stderr.read() if proc.poll() else ''}"
        return line

    yield start
    for p in procs:
        if p.poll() is None:
            p.terminate()
        p.wait(10)


@pytest.mark.parametrize(("module", "dr", "frags", "fmt"),
                         [("rn2483", 0, 74, "generic"), ("rak3172", 3, 3, "chirpstack")])
def test_send_records_verifies_against_the_collector(emulate_proc, service, module, dr, frags, fmt):
    """``hil emulate --forward-to`` into the collector and ``hil send-records --collector``:
    the table shows each record complete and delivered, and the Web App holds the
    documents of exactly the records sent."""
    eui = EUI[module]
    path = emulate_proc(module, "--region", "US915", "--speed", "0", "--dev-eui", eui, "--forward-to", service.url,
                        "--format", fmt, "--token", INGEST_TOKEN, "--ns-latency", "0.01", "--ns-jitter", "0.01")
    r = CliRunner().invoke(main, [
        "send-records", "--port", path, "--module", module, "--count", "2", "--dr", str(dr), "--first-msg-id", "200",
        "--seed", "4", "--collector", service.url, "--token", API_TOKEN, "--verify-timeout", "20", *FAST_CLI,
    ])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()]
    assert rows[0][-4:] == ["state", "received", "delivery", "document"]
    assert [row[0] for row in rows[1:]] == ["200", "201"]
    for row in rows[1:]:
        assert row[5] == str(frags) and row[-4:] == ["complete", f"{frags}/{frags}", "delivered", "match"]

    docs = service.stub_documents()
    assert len(docs) == 2
    serial = int(eui, 16) & 0xFFFFFFFF
    for seq, doc in enumerate(sorted(docs, key=lambda d: d["idempotencyKey"])):
        root = etree.fromstring(doc["xml"].encode())
        assert root.get("complete") == "true"
        # the record the command generated: its start time came from the clock
        start = parse_ms(root.find(NS_ + "record").get("start")) // 1000
        rec = bench.make_record(serial, seq, start_time=start - seq * 144 * 600, seed=4)
        assert doc["idempotencyKey"] == xmldoc.idempotency_key(eui, rec)
        tr = root.find(NS_ + "transport")
        assert (tr.get("messageId"), tr.get("fragmentsReceived")) == (str(200 + seq), str(frags))
        transport = xmldoc.Transport(200 + seq, frags, frags, parse_ms(tr.get("firstReceived")),
                                     parse_ms(tr.get("lastReceived")))
        assert doc["xml"] == xmldoc.build_document(rec, eui, transport, True).decode()


def test_send_records_after_a_dr_drop_never_reuses_a_msg_id(emulate_proc, service):
    """ADR lowers the DR after the first uplink (``--fault lower_dr``): the first record
    restarts as msg_id 11 at the new N, so the second must take 12, not 11 again, and
    each record's document at the collector is checked byte for byte."""
    eui = EUI["rn2483"]
    path = emulate_proc("rn2483", "--speed", "0", "--no-duty-cycle", "--dev-eui", eui, "--forward-to", service.url,
                        "--token", INGEST_TOKEN, "--fault", "lower_dr")
    r = CliRunner().invoke(main, [
        "send-records", "--port", path, "--module", "rn2483", "--count", "2", "--dr", "3", "--first-msg-id", "10",
        "--seed", "7", "--collector", service.url, "--token", API_TOKEN, "--verify-timeout", "20", *FAST_CLI,
    ])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert [(row[0], row[3], row[7]) for row in rows] == [("11", "2", "1"), ("12", "2", "0")]
    assert [row[-4:] for row in rows] == [["complete", "14/14", "delivered", "match"]] * 2
    msgs = service.get(f"/api/messages?device={eui}").json()["messages"]
    # the cut first message (one fragment at DR3) stays open until its deadline
    assert sorted((m["msgId"], m["state"], m["fragmentsReceived"]) for m in msgs) == [
        (10, "open", 1), (11, "complete", 14), (12, "complete", 14)]


def test_verification_catches_a_document_built_from_another_records_fragments(rig_factory, service):
    """What a reused msg_id did: a second record sent as msg_id 11 right after the
    first. The collector takes one of its fragments as a duplicate of the first
    message and holds the other 13 in a new open message; the old check found
    message 11 'complete 14/14 delivered' (the first record's). Now the document is
    compared with the record sent and the mismatch named."""
    eui = EUI["rn2483"]
    fwd = Forwarder(service.url, "generic", token=INGEST_TOKEN)
    try:
        rig = rig_factory("rn2483", "EU868", on_tx=fwd.submit, dev_eui=eui, duty_cycle=False)
        rig.modem.join()
        rig.modem.set_dr(2)
        first = wire.encode_record(bench.make_record(0xE2E, 1))
        bench.send_record(rig.modem, 11, first)
        second = bench.send_record(rig.modem, 11, wire.encode_record(bench.make_record(0xE2E, 2)))
        assert fwd.drain(10)
    finally:
        fwd.close()
    (checked,) = bench.verify(service.url, eui, [second], token=API_TOKEN, deadline_s=0.5, poll_s=0.1)
    assert checked.collector["state"] == "complete" and checked.collector["fragmentsReceived"] == 14
    assert not bench.verified(checked)
    assert checked.check == "13 fragment(s) that were not sent in this message (msg_id reused?)"
