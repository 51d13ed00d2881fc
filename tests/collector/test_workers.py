"""``collector serve --workers 2``: HTTP worker processes in front of the owner.

Everything runs as an operator runs it: ``python -m collector serve --workers 2``
and ``python -m collector webapp-stub`` as subprocesses, real HTTP on loopback,
real SQLite files. The tests prove that with workers

- the three ingest formats are answered as by the single process (accepted,
  duplicate; out of order; concurrent), the virtual clock moved through a worker
  reaches the owner, and the complete and partial documents arrive at the Web App;
- what the ingest gate rejects (401, 400, 413, 415, ChirpStack ``join``) is
  answered by the workers with the same JSON errors, and nothing is stored;
- ``/healthz``, ``/api``, ``/admin`` and ``/metrics`` are passed through to the
  owner, and the owner's metrics include what the workers counted;
- a worker killed with SIGKILL is started again and listens again, and ingest
  goes on meanwhile;
- SIGTERM stops everything with exit code 0 and keeps every acknowledged uplink;
- a second service on the same port fails to start and leaves the first alone;
- the channel's framing and uplink encoding round-trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import re
import signal
import socket
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.core import wire, wire2
from collector.core.uplink import Uplink
from collector.service.store import Store
from collector.service.workers import MAX_FRAME, frame, read_frame, uplink_fields, uplink_from_fields
from collector.testing.examples import example_record
from collector.testing.harness import (
    HTTPResult,
    collector_cmd,
    free_port,
    http,
    process_gone,
    wait_until,
    worker_pids,
)
from devicesim.formats import AppUplink, uplink_body

TOKEN = "workers-ingest"
WEBAPP_TOKEN = "workers-webapp"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
CLOCK_START = 1_800_000_000
T0_NS = CLOCK_START * 10**9
FORMATS = ("ttn", "chirpstack", "generic")
MESSAGE_TIMEOUT = 600


# --------------------------------------------------------------------------- processes


def listens(pid: int, port: int) -> bool:
    """Whether process ``pid`` holds a listening TCP socket on ``port`` (Linux /proc)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                cols = line.split()
                if cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(cols[9])
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        with contextlib.suppress(OSError):
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    return False


@dataclass
class Running:
    """One service (and maybe its stand-in Web App) started by a test."""
    tmp: Path
    port: int = 0
    stub_port: int = 0
    procs: list[subprocess.Popen] = field(default_factory=list)
    svc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stub_url(self) -> str:
        return f"http://127.0.0.1:{self.stub_port}"

    @property
    def log(self) -> Path:
        return self.tmp / "collector.log"

    @property
    def db(self) -> Path:
        return self.tmp / "c.db"

    def serve_cmd(self, *extra: str) -> list[str]:
        cmd = collector_cmd("serve", "--port", str(self.port), "--db", str(self.db), "--ingest-token", TOKEN,
                            "--api-token", TOKEN, "--workers", "2", *extra)
        if self.stub_port:
            cmd += ["--webapp-url", self.stub_url, "--webapp-token", WEBAPP_TOKEN]
        return cmd

    def launch(self, cmd: list[str], log: Path, ready: str) -> subprocess.Popen:
        p = subprocess.Popen(cmd, stdout=log.open("ab"), stderr=subprocess.STDOUT, cwd=self.tmp)
        self.procs.append(p)
        wait_until(lambda: p.poll() is not None or http("GET", ready, timeout=2).status == 200,
                   what=f"{cmd[3]} to answer")
        assert p.poll() is None, f"{cmd[3]} exited with {p.returncode}:\n{log.read_text()[-3000:]}"
        return p

    def start(self, *extra: str, stub: bool = False) -> Running:
        if stub:
            self.stub_port = free_port()
            self.launch(collector_cmd("webapp-stub", "--port", str(self.stub_port), "--token", WEBAPP_TOKEN),
                        self.tmp / "stub.log", self.stub_url + "/stub/stats")
        self.port = free_port()
        self.svc = self.launch(self.serve_cmd(*extra), self.log, self.url + "/healthz")
        return self

    def kill_all(self) -> None:
        """SIGKILL the owner first (then nothing starts workers again), then every worker, then the rest."""
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.log.exists():
            for pid in worker_pids(self.log):
                if not process_gone(pid):
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)

    def post(self, path: str, body: object, headers: dict[str, str] | None = None,
             timeout: float = 30.0) -> HTTPResult:
        return http("POST", self.url + path, body, {**AUTH, **(headers or {})}, timeout=timeout)

    def get(self, path: str, auth: bool = True) -> HTTPResult:
        return http("GET", self.url + path, None, AUTH if auth else None)


@pytest.fixture
def running(tmp_path):
    r = Running(tmp_path)
    try:
        yield r
    finally:
        r.kill_all()


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    """One service with 2 workers, the stand-in Web App and the manual clock, shared by
    the tests that do not stop or kill it (each uses its own devices)."""
    r = Running(tmp_path_factory.mktemp("workers-live"))
    try:
        r.start("--clock", "manual", "--clock-start", str(CLOCK_START), "--body-limit", "2048",
                "--deadline-policy", "fixed", "--message-timeout", str(MESSAGE_TIMEOUT), stub=True)
        yield r
    finally:
        r.kill_all()


# --------------------------------------------------------------------------- uplinks


def record_fragments(msg_id: int, seq: int, size: int = 115) -> list[bytes]:
    rec = example_record()
    rec.record_seq = seq
    return wire.fragment(msg_id, wire.encode_record(rec), size)


def idempotency_key(dev: str, seq: int) -> str:
    rec = example_record()
    return f"{dev}-{rec.device_serial}-{seq}-{rec.start_time}"


def uplink(dev: str, payloads: list[bytes], i: int, n: int, fport: int = 16) -> tuple[str, dict]:
    """Fragment ``i`` of ``payloads`` as the ``n``-th request, formats taking turns."""
    return uplink_body(FORMATS[n % 3], AppUplink(dev, fport, 10 + i, payloads[i], T0_NS + i * 10**9, dr=3, sf=9,
                                                 uid=n))


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample of ``/metrics`` (0 when absent)."""
    for m in re.finditer(rf"^{name}\{{(.*?)\}} (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1)))
        if have == labels:
            return float(m.group(2))
    return 0.0


# --------------------------------------------------------------------------- ingest


def test_ingest_through_workers_reaches_the_web_app(live):
    # one message out of order across the three formats, with a duplicate in the middle
    dev_a = "00000000000A0001"
    frags_a = record_fragments(1, 101)
    order = list(range(len(frags_a)))
    random.Random(7).shuffle(order)
    order = order[:3] + [order[1]] + order[3:]
    answers = [live.post(*uplink(dev_a, frags_a, i, n)) for n, i in enumerate(order)]
    assert [a.status for a in answers] == [202] * 7, answers
    assert [a.json()["status"] for a in answers] == ["accepted"] * 3 + ["duplicate"] + ["accepted"] * 3
    uid_a = answers[0].json()["message"]
    assert {a.json()["message"] for a in answers} == {uid_a}
    assert answers[3].json()["fragment"] == order[1]
    assert answers[-1].json()["closed"] == [uid_a]

    # three more messages, every fragment at once from 8 connections (both workers, batched)
    devs_b = [f"00000000000B000{k}" for k in range(3)]
    items = [uplink(dev, record_fragments(2 + k, 102 + k), i, n)
             for k, dev in enumerate(devs_b) for n, i in enumerate(random.Random(k).sample(range(6), 6))]
    random.Random(3).shuffle(items)
    with ThreadPoolExecutor(8) as pool:
        concurrent = list(pool.map(lambda it: live.post(*it), items))
    assert [(a.status, a.json()["status"]) for a in concurrent] == [(202, "accepted")] * len(items)

    # a message whose last fragment is lost: open until its deadline on the manual clock
    dev_c = "00000000000C0001"
    frags_c = record_fragments(5, 105, size=51)
    assert len(frags_c) == 14
    assert {live.post(*uplink(dev_c, frags_c, i, i)).status for i in range(13)} == {202}

    before = live.post("/admin/clock", {"advance": 0})
    assert before.status == 200, before
    complete = [idempotency_key(dev_a, 101)] + [idempotency_key(d, 102 + k) for k, d in enumerate(devs_b)]

    def keys() -> list[str]:
        docs = http("GET", live.stub_url + "/stub/documents").json()["documents"]
        return sorted(d["idempotencyKey"] for d in docs if d["idempotencyKey"][:16] in [dev_a, *devs_b, dev_c])

    wait_until(lambda: keys() == sorted(complete), timeout=10, what="the four complete documents")
    (open_c,) = live.get(f"/api/messages?device={dev_c}").json()["messages"]
    assert (open_c["state"], open_c["fragmentsReceived"]) == ("open", 13)

    # the clock moved through a worker is the owner's: the deadline passes
    after = live.post("/admin/clock", {"advance": MESSAGE_TIMEOUT + 1})
    assert after.status == 200, after
    assert after.json()["now"] == pytest.approx(before.json()["now"] + MESSAGE_TIMEOUT + 1)
    assert after.json()["closed"] >= 1
    wait_until(lambda: keys() == sorted([*complete, idempotency_key(dev_c, 105)]), timeout=10,
               what="the partial document")
    for dev in [dev_a, *devs_b]:
        (m,) = live.get(f"/api/messages?device={dev}").json()["messages"]
        assert (m["state"], m["delivery"], m["fragmentsExpected"], m["fragmentsReceived"]) == \
            ("complete", "delivered", 6, 6), m
    (m,) = live.get(f"/api/messages?device={dev_c}").json()["messages"]
    assert (m["state"], m["delivery"], m["closeReason"]) == ("partial", "delivered", "deadline")


def test_rejections_are_answered_by_the_workers(live):
    dev = "00000000000D0001"
    path, body = uplink(dev, record_fragments(1, 201), 0, 2)  # the collector's own format
    assert path == "/uplink"

    def check(r: HTTPResult, status: int, words: str) -> None:
        assert r.status == status, r
        assert r.headers["Content-Type"].startswith("application/json"), r.headers
        assert words in r.json()["error"], r.json()

    check(http("POST", live.url + path, body, {"Authorization": "Bearer wrong"}), 401, "token")
    check(http("POST", live.url + path, body), 401, "token")
    check(live.post(path, b'{"devEui": ', JSON), 400, "malformed JSON")
    check(live.post(path, {**body, "payload": "!!not base64!!"}), 400, "base64")
    check(live.post(path, b"x" * 4096, JSON), 413, "limit is 2048")
    # without a Content-Length (chunked) the limit holds as well
    check(live.post(path, iter([b"x" * 1024] * 4), JSON), 413, "2048")
    check(live.post(path, orjson.dumps(body), {"Content-Type": "text/plain"}), 415, "text/plain")
    join = live.post("/uplink/chirpstack?event=join", {"deviceInfo": {"devEui": dev.lower()}})
    assert join.status == 202 and join.json() == {"status": "ignored",
                                                  "reason": "ChirpStack event 'join' is not handled"}
    # none of it reached the store; the same uplink with the token is accepted
    assert live.get(f"/api/messages?device={dev}").json()["messages"] == []
    ok = live.post(path, body)
    assert ok.status == 202 and ok.json()["status"] == "accepted"


def test_a_lone_surrogate_escape_is_refused_not_left_hanging(live):
    """Valid JSON that holds no valid string (a lone UTF-16 surrogate) can be neither
    stored nor sent to the owner: the gate answers 400 at once."""
    body = (b'{"devEui": "00000000000E0001", "fPort": 16, "payload": "AAEC", "gatewayId": "gw-\\ud800"}')
    r = live.post("/uplink", body, JSON, timeout=3)
    assert r.status == 400, r
    assert "surrogate" in r.json()["error"]


def test_pass_through_routes_and_merged_metrics(live):
    h = http("GET", live.url + "/healthz")
    assert h.status == 200
    assert h.json()["workers"] == {"configured": 2, "running": 2}
    assert h.json()["status"] == "ok"

    assert live.get("/api/status", auth=False).status == 401
    status = live.get("/api/status")
    assert status.status == 200 and "documents" in status.json()
    assert live.get("/api/messages/no-such-message").status == 404
    bad = live.post("/admin/clock", {"advance": "soon"})
    assert (bad.status, bad.json()) == (400, {"error": "the time must be a number"})

    # /uplink/ttn with a wrong token is sent only by this test: the counts are exact
    path, body = uplink("00000000000F0001", record_fragments(1, 301), 0, 0)
    assert path == "/uplink/ttn"
    for _ in range(3):
        assert http("POST", live.url + path, body, {"Authorization": "Bearer wrong"}).status == 401
    assert live.post("/uplink/chirpstack?event=join", {}).status == 202

    def counted() -> str | None:
        text = http("GET", live.url + "/metrics").body.decode()
        return text if (metric(text, "collector_http_requests_total", code="401", integration="ttn") == 3
                        and metric(text, "collector_uplinks_total", integration="ttn", outcome="unauthorised") == 3
                        and metric(text, "collector_http_requests_total", code="202", integration="chirpstack") >= 1
                        and metric(text, "collector_uplinks_total", integration="chirpstack",
                                   outcome="ignored") >= 1) else None

    text = wait_until(counted, timeout=10, step=0.2, what="the workers' counts in /metrics")
    assert "collector_ingest_seconds_bucket" in text
    # the workers clear what they reported: one more is one more, not a repeat of the earlier ones
    assert http("POST", live.url + path, body, {"Authorization": "Bearer wrong"}).status == 401
    wait_until(lambda: metric(http("GET", live.url + "/metrics").body.decode(), "collector_http_requests_total",
                              code="401", integration="ttn") == 4, timeout=10, step=0.2, what="a fourth 401")
    final = http("GET", live.url + "/metrics").body.decode()
    assert metric(final, "collector_uplinks_total", integration="ttn", outcome="unauthorised") == 4


def test_a_gzip_body_passed_through_to_the_owner_and_errors_in_json(live):
    """Issue 12, items 13 and 14: the worker passes a decoded body on without its
    Content-Encoding (the owner answered 500 trying to decode it again), a body that
    is not what its Content-Encoding says is a 400, and the workers' own error pages
    (404, 405) are JSON."""
    import gzip

    body = gzip.compress(b'{"advance": 0}')
    r = http("POST", live.url + "/admin/clock", body, {**AUTH, **JSON, "Content-Encoding": "gzip"})
    assert r.status == 200 and r.json()["now"] >= CLOCK_START, r
    r = http("POST", live.url + "/admin/clock", b'{"advance": 0}', {**AUTH, **JSON, "Content-Encoding": "gzip"})
    assert r.status == 400 and "cannot be read" in r.json()["error"], r
    for method, path, status in (("GET", "/no/such/route", 404), ("GET", "/uplink", 405)):
        r = http(method, live.url + path, None, AUTH)
        assert r.status == status and r.headers["Content-Type"].startswith("application/json"), r
        assert r.json()["error"], r


@pytest.mark.slow
def test_a_second_service_on_the_same_port_fails_and_leaves_the_first_alone(live):
    pids = worker_pids(live.log)
    t0 = time.monotonic()
    second = subprocess.run(live.serve_cmd("--clock", "manual", "--clock-start", str(CLOCK_START)),
                            capture_output=True, text=True, cwd=live.tmp, timeout=30)
    assert second.returncode != 0
    assert time.monotonic() - t0 < 15
    assert f"cannot listen on 127.0.0.1:{live.port}" in second.stderr, second.stderr
    assert "in use" in second.stderr
    assert "event=worker_started" not in second.stderr
    # the first service still answers with its own workers
    assert worker_pids(live.log) == pids and not any(process_gone(p) for p in pids)
    h = http("GET", live.url + "/healthz")
    assert h.status == 200 and h.json()["workers"] == {"configured": 2, "running": 2}
    r = live.post(*uplink("0000000000100001", record_fragments(1, 401), 0, 0))
    assert r.status == 202 and r.json()["status"] == "accepted"


# --------------------------------------------------------------------------- failures and stopping


def post_until_202(r: Running, item: tuple[str, dict]) -> HTTPResult:
    def attempt() -> HTTPResult | None:
        a = r.post(*item, timeout=5)
        return a if a.status == 202 else None
    return wait_until(attempt, timeout=15, step=0.05, what="a 202")


def test_a_killed_worker_is_started_again_and_ingest_goes_on(running):
    running.start()
    first = worker_pids(running.log, 0)
    assert len(first) == 1 and len(worker_pids(running.log)) == 2
    assert wait_until(lambda: all(listens(p, running.port) for p in worker_pids(running.log)), timeout=10,
                      what="both workers to listen")
    dev = "0000000000200001"
    frags = record_fragments(1, 501)
    for i in range(3):
        assert running.post(*uplink(dev, frags, i, i)).status == 202

    os.kill(first[0], signal.SIGKILL)
    # ingest goes on while worker 0 is down and while it starts again
    answers = [post_until_202(running, uplink(dev, frags, i, i)) for i in range(3, 6)]
    assert [a.json()["status"] for a in answers] == ["accepted"] * 3

    starts = wait_until(lambda: (s := worker_pids(running.log, 0)) and len(s) == 2 and s, timeout=10,
                        what="worker 0 to be started again")
    assert starts[1] != first[0]
    assert process_gone(first[0])
    assert re.search(rf"event=worker_exited worker=0 pid={first[0]} code=-9", running.log.read_text())
    wait_until(lambda: http("GET", running.url + "/healthz").json()["workers"] == {"configured": 2, "running": 2},
               timeout=10, what="/healthz to count 2 running workers")
    wait_until(lambda: listens(starts[1], running.port), timeout=10, what="the new worker 0 to listen")
    assert running.svc is not None and running.svc.poll() is None

    (m,) = running.get(f"/api/messages?device={dev}").json()["messages"]
    assert (m["state"], m["fragmentsReceived"]) == ("complete", 6)
    assert running.post(*uplink(dev, frags, 0, 0)).json()["status"] == "duplicate"


def test_sigterm_stops_owner_and_workers_and_keeps_what_was_acknowledged(running):
    running.start()
    svc = running.svc
    assert svc is not None
    pids = worker_pids(running.log)
    assert len(pids) == 2
    items = [uplink(f"00000000003000{k:02X}", record_fragments(1, 600 + k), i, n)
             for k in range(10) for n, i in enumerate(range(6))]
    acked: list[tuple[str, int]] = []
    lock = threading.Lock()

    def post(item: tuple[str, dict]) -> None:
        try:
            a = running.post(*item, timeout=10)
        except OSError:
            return  # refused once the workers stop accepting: not acknowledged
        if a.status == 202:
            with lock:
                acked.append((a.json()["message"], a.json()["fragment"]))
                if len(acked) == 12:
                    svc.send_signal(signal.SIGTERM)

    with ThreadPoolExecutor(6) as pool:
        list(pool.map(post, items))
    assert svc.wait(timeout=20) == 0
    log = running.log.read_text()
    assert "event=shutting_down" in log and "event=stopped" in log
    # the owner stopped its workers: none crashed and was started again, none was left behind
    assert "event=worker_exited" not in log and "event=owner_lost" not in log, log
    assert worker_pids(running.log) == pids
    wait_until(lambda: all(process_gone(p) for p in pids), timeout=5, what="the workers to be gone")
    with socket.create_server(("127.0.0.1", running.port)):
        pass  # the port is free again
    assert len(acked) >= 12
    store = Store(running.db)
    try:
        for uid, index in acked:
            m = store.get_message(uid)
            assert m is not None and index in [f["index"] for f in m["fragments"]], (uid, index)
    finally:
        store.close()


# --------------------------------------------------------------------------- the channel


def read_all(data: list[bytes], eof: bool = True) -> list:
    async def run() -> list:
        reader = asyncio.StreamReader()
        for chunk in data:
            reader.feed_data(chunk)
        if eof:
            reader.feed_eof()
        out = []
        while (v := await read_frame(reader)) is not None:
            out.append(v)
        out.append(None)
        return out
    return asyncio.run(run())


def test_frames_round_trip_and_eof_is_none():
    values = [["hello", 1, 4242], ["up", [[1, "ttn", ["AB", 16, "AAE=", None]]]], ["stats", {}], []]
    data = b"".join(frame(v) for v in values)
    assert frame(values[0])[:4] == len(orjson.dumps(values[0])).to_bytes(4, "big")
    assert read_all([data]) == [*values, None]
    # split anywhere, byte by byte
    assert read_all([data[i:i + 1] for i in range(len(data))]) == [*values, None]
    # a frame cut short by the other side's close is not a value
    assert read_all([data[:-3]]) == [*values[:-1], None]
    assert read_all([frame(values[0])[:2]]) == [None]
    assert read_all([]) == [None]
    with pytest.raises(ValueError, match="above the limit"):
        read_all([(MAX_FRAME + 1).to_bytes(4, "big")])


def test_uplink_fields_round_trip():
    full = Uplink("70B3D57ED005A1B2", 16, bytes(range(256)), 1_800_000_000_123, 4_294_967_295, "SF9BW125", "EU868",
                  868_100_000, "gw-1", -117.5, -7.25, "chirpstack")
    bare = Uplink("70B3D57ED005A1B2", 0, b"", None)
    for up in (full, bare):
        assert uplink_from_fields(uplink_fields(up)) == up
        assert uplink_from_fields(orjson.loads(orjson.dumps(uplink_fields(up)))) == up
    assert uplink_fields(bare)[3] is None


text = st.text(max_size=40)
floats = st.floats(allow_nan=False, allow_infinity=False)
uplinks = st.builds(
    Uplink,
    dev_eui=st.text("0123456789ABCDEF", min_size=16, max_size=16),
    fport=st.integers(0, 255),
    payload=st.binary(max_size=242),
    received_ms=st.none() | st.integers(0, 2**53),
    fcnt=st.none() | st.integers(0, 2**32 - 1),
    data_rate=st.none() | text,
    region=st.none() | st.sampled_from(["EU868", "US915"]),
    frequency_hz=st.none() | st.integers(0, 2**32 - 1),
    gateway=st.none() | text,
    rssi=st.none() | floats,
    snr=st.none() | floats,
    source=st.sampled_from(FORMATS),
)


@given(uplinks)
def test_any_uplink_crosses_the_channel_unchanged(up):
    async def run() -> Uplink:
        reader = asyncio.StreamReader()
        reader.feed_data(frame(["up", [[7, up.source, uplink_fields(up)]]]))
        reader.feed_eof()
        msg = await read_frame(reader)
        assert msg is not None and msg[0] == "up"
        ((rid, integration, fields),) = msg[1]
        assert (rid, integration) == (7, up.source)
        return uplink_from_fields(fields)
    assert asyncio.run(run()) == up


def test_a_worker_that_keeps_dying_is_restarted_ever_later_and_one_that_ran_at_once():
    from collector.service.workers import RESTART_MAX, RESTART_RESET, restart_delay

    failures, delays = 0, []
    for _ in range(8):
        failures, d = restart_delay(failures, 0.5)
        delays.append(d)
    assert delays == [1, 2, 4, 8, 16, RESTART_MAX, RESTART_MAX, RESTART_MAX]
    assert restart_delay(failures, RESTART_RESET) == (1, 1.0)


def test_wire_format_v2_through_the_workers(live):
    # v2 fragments (FPort 17) and polls cross the worker channel to the owner like v1
    dev = "00000000000F0017"
    payloads = wire2.encode_message(wire.encode_record(example_record()), 4, 115, 2)  # k = 6
    answers = [live.post(*uplink(dev, payloads, i, i, fport=17)) for i in range(2, 8)]  # data 0, 1 lost
    assert [a.json()["status"] for a in answers] == ["accepted"] * 6
    assert answers[-1].json()["closed"] == [answers[0].json()["message"]]
    poll = live.post(*uplink(dev, [wire2.poll(4, 6, 8)], 0, 1, fport=17)).json()
    assert poll == {"status": "poll", "message": answers[0].json()["message"], "held": 6, "need": 0,
                    "rebuilt": True}
    bad = live.post(*uplink(dev, [bytes.fromhex("04ff0606aa")], 0, 2, fport=17))
    assert bad.status == 400 and "exactly 4 bytes" in bad.json()["error"]
