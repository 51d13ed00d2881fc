"""Reliability workloads shared by the tests (short, bounded form) and by
``reports/reliability.py`` (longer form): crash safety under SIGKILL, ingest load at
a fraction of the measured maximum, open-message bounds.

Each workload runs the real ``collector serve`` and ``collector webapp-stub``
commands as subprocesses on loopback with free ports and real SQLite files, drives
them over HTTP with real-shaped uplinks (:func:`devicesim.formats.uplink_body`,
fragments from :func:`collector.core.wire.fragment`) and returns plain figures (a dict)
that the caller asserts on or reports. Not a test module: loaded by path from
``conftest.py`` and from the report script.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector.core import wire
from collector.core.timefmt import parse_ms
from collector.testing.examples import example_record
from collector.testing.harness import collector_cmd, free_port, http, wait_until
from devicesim.formats import FORMATS, AppUplink, uplink_body

TOKEN = "reliability-ingest-token"
API = {"Authorization": f"Bearer {TOKEN}"}
WEBAPP_TOKEN = "reliability-webapp-token"
T0 = 1_800_000_000


# --------------------------------------------------------------------------- processes



def rss_kb(pid: int) -> int:
    """Resident set size of a process, KiB (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for pid {pid}")


@dataclass
class Proc:
    cmd: list[str]
    log: Path
    health: str
    env: dict[str, str] | None = None
    popen: subprocess.Popen | None = None
    starts: list[float] = field(default_factory=list)

    def start(self, timeout: float = 30.0) -> Proc:
        t0 = time.monotonic()
        self.popen = subprocess.Popen(self.cmd, stdout=self.log.open("ab"), stderr=subprocess.STDOUT,
                                      cwd=self.log.parent, env=self.env)
        wait_until(lambda: self.alive and http("GET", self.health, timeout=2).status in (200, 404),
                   timeout, what=f"{self.cmd[3]} to listen")
        self.starts.append(time.monotonic() - t0)
        return self

    @property
    def alive(self) -> bool:
        if self.popen is None or self.popen.poll() is not None:
            if self.popen is not None and self.popen.returncode not in (None, -signal.SIGKILL, 0):
                raise AssertionError(f"{self.cmd[3]} exited with {self.popen.returncode}; log: "
                                     f"{self.log.read_text()[-2000:]}")
            return False
        return True

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def kill9(self) -> None:
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> int | None:
        if self.popen is None or self.popen.poll() is not None:
            return None if self.popen is None else self.popen.returncode
        self.popen.send_signal(signal.SIGTERM)
        try:
            return self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()
            return None


def stub_proc(workdir: Path, *extra: str) -> Proc:
    port = free_port()
    return Proc(collector_cmd("webapp-stub", "--port", str(port), "--db", str(workdir / "stub.db"),
                              "--token", WEBAPP_TOKEN, *extra),
                workdir / "stub.log", f"http://127.0.0.1:{port}/stub/stats")


def collector_proc(workdir: Path, stub_url: str | None, *extra: str, port: int | None = None,
                   env: dict[str, str] | None = None) -> Proc:
    port = port or free_port()
    # (one token for ingest and the API, on purpose: the workloads use one header for both)
    args = ["serve", "--port", str(port), "--db", str(workdir / "collector.db"), "--ingest-token", TOKEN,
            "--api-token", TOKEN]
    if stub_url:
        args += ["--webapp-url", stub_url, "--webapp-token", WEBAPP_TOKEN]
    return Proc(collector_cmd(*args, *extra), workdir / "collector.log", f"http://127.0.0.1:{port}/healthz",
                env={**os.environ, **(env or {})})


def base_url(p: Proc) -> str:
    return p.health.rsplit("/", 1)[0].replace("/stub", "")


def db_counts(db: Path) -> dict[str, int]:
    """Row counts of every table that ingest writes (read straight from the file)."""
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]  # noqa: S608 - fixed names
                for t in ("fragments", "open_messages", "messages", "documents", "incidents", "meta", "devices")}
    finally:
        c.close()


# --------------------------------------------------------------------------- traffic


@dataclass
class Sent:
    """One message a simulated device sends: its uplinks (path, body) and what must
    happen to it."""

    dev_eui: str
    msg_id: int
    key: str
    uplinks: list[tuple[str, dict]]
    #: indices the device "loses" on air (never sent)
    lost: set[int] = field(default_factory=set)


_RECORD_CACHE: dict[int, bytes] = {}


def make_message(dev_index: int, msg_id: int, seq: int, *, size: int = 115, samples: int = 144,
                 lose: set[int] | None = None, fmt: str | None = None) -> Sent:
    """A real-shaped message: the example record with a serial per device and a
    distinct record_seq, fragmented at ``size``, each fragment in one of the three
    formats (rotating unless ``fmt``)."""
    dev = f"70B3D5{dev_index:010X}"
    rec = example_record(samples=samples)
    rec.device_serial = 100_000 + dev_index
    rec.record_seq = seq % 65536
    rec.start_time = 1_795_478_400 + seq // 65536
    frags = wire.fragment(msg_id, wire.encode_record(rec), size)
    ups = []
    for i, f in enumerate(frags):
        f_ = fmt or FORMATS[(seq + i) % 3]
        ups.append(uplink_body(f_, AppUplink(dev, 16, seq * 64 + i, f, (T0 + seq) * 10**9 + i * 10**6,
                                              dr=3, sf=9, uid=seq * 64 + i)))
    key = f"{dev}-{rec.device_serial}-{rec.record_seq}-{rec.start_time}"
    return Sent(dev, msg_id, key, ups, set(lose or ()))


def message_uplinks(n_messages: int, fragments_at: int = 115) -> list[list[tuple[str, dict]]]:
    """The uplinks of ``n_messages`` messages of four devices (TTN, ChirpStack and
    generic bodies in turn)."""
    out = []
    for m in range(n_messages):
        rec = example_record()
        rec.record_seq = 100 + m
        dev = f"70B3D5000000{m % 4:04X}"
        ups = []
        for i, f in enumerate(wire.fragment(m, wire.encode_record(rec), fragments_at)):
            ups.append(uplink_body(("ttn", "chirpstack", "generic")[i % 3],
                                   AppUplink(dev, 16, m * 16 + i, f, (T0 + m) * 10**9 + i, dr=3, sf=9)))
        out.append(ups)
    return out


def traffic(seed: int, devices: int = 24, lose_fraction: float = 0.15) -> Iterator[Sent]:
    """An endless stream of messages from ``devices`` devices, msg_ids cycling
    per device; a fraction lose one fragment other than 0 (→ a partial document
    at the deadline)."""
    rng = random.Random(seed)
    seq = 0
    while True:
        d = seq % devices
        msg_id = (seq // devices) % 256
        lose = set()
        if rng.random() < lose_fraction:
            lose = {rng.randrange(1, 6)}
        yield make_message(d, msg_id, seq, lose=lose)
        seq += 1


# --------------------------------------------------------------------------- crash safety


def crash_run(workdir: Path, *, kills: int = 10, seed: int = 7, gap: tuple[float, float] = (0.8, 2.0),
              clients: int = 6, message_timeout: float = 6.0, progress: Callable[[str], None] | None = None,
              workers: int = 0, virtual_time: bool = False) -> dict[str, Any]:
    """Steady load from ``clients`` threads; SIGKILL the collector after a seeded
    uniform ``gap`` of load, ``kills`` times, restarting it on the same database
    at once. Uplinks not acknowledged (refused, reset, 503) are re-sent after the
    restart, as a retrying network server would (with ``workers``, the HTTP workers
    answer 503 for what was in flight when the owner died). At the end, wait until every
    message is closed and every document delivered, stop the collector, and check
    the database and the stand-in Web App.

    ``virtual_time``: the collector runs on its manual clock (each start sets it to
    the wall time), so no deadline passes during the load however slow the machine
    restarts (give a ``message_timeout`` longer than the run); at the end the clock
    is set to each remaining deadline in turn, which closes the messages that lost
    a fragment exactly at their deadlines. The verdict then does not depend on how
    long a restart takes."""
    say = progress or (lambda s: None)
    rng = random.Random(seed)
    stub = stub_proc(workdir).start()
    stub_url = base_url(stub)
    svc = collector_proc(workdir, stub_url, "--message-timeout", str(message_timeout),
                         "--deadline-policy", "fixed", "--backoff-base", "0.2", "--backoff-cap", "2",
                         "--circuit-threshold", "1000", "--log-level", "WARNING", "--workers", str(workers),
                         *(("--clock", "manual") if virtual_time else ()))
    url = base_url(svc)
    gen = traffic(seed)
    lock = threading.Lock()
    acked: dict[tuple[str, int], float] = {}  # (message uid, index) -> first ack (wall time)
    first_ack: dict[str, float] = {}  # message uid -> earliest ack of any of its fragments
    expected: dict[str, Sent] = {}  # idempotency key -> message
    counts = {"posted": 0, "acknowledged": 0, "refused": 0, "unavailable": 0, "other": 0}
    bad_answers: list[str] = []
    stop_load = threading.Event()
    down_since: list[float] = []
    gaps: list[float] = []

    def next_message() -> Sent:
        with lock:
            m = next(gen)
            expected[m.key] = m
            return m

    def send(path: str, body: dict) -> None:
        while True:
            try:
                r = http("POST", url + path, body, API, timeout=10)
            except OSError:
                r = None
            with lock:
                counts["posted"] += 1
                if r is not None and r.status == 202:
                    d = r.json()
                    counts["acknowledged"] += 1
                    now = time.time()
                    acked.setdefault((d["message"], d["fragment"]), now)
                    first_ack.setdefault(d["message"], now)
                    return
                if r is None:
                    counts["refused"] += 1
                elif r.status == 503:
                    counts["unavailable"] += 1
                else:
                    counts["other"] += 1
                    bad_answers.append(f"{r.status} {r.body[:200]!r}")
                    return
            time.sleep(0.05)  # the collector is restarting: try again, like a retrying network server

    def client() -> None:
        while not stop_load.is_set():
            m = next_message()
            for i, (path, body) in enumerate(m.uplinks):
                if i not in m.lost:
                    send(path, body)

    try:
        svc.start()
        threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
        for t in threads:
            t.start()
        for k in range(kills):
            time.sleep(rng.uniform(*gap))
            svc.kill9()
            t_down = time.monotonic()
            down_since.append(time.time())
            svc.start()
            gaps.append(time.monotonic() - t_down)
            say(f"kill {k + 1}/{kills}: {counts['acknowledged']} uplinks acknowledged, down {gaps[-1]:.2f} s")
        time.sleep(rng.uniform(*gap))
        stop_load.set()
        for t in threads:
            t.join(timeout=60)
        n_msgs = len(expected)

        if virtual_time:
            _close_at_deadlines(url)

        def settled() -> bool:
            if virtual_time:  # let retries of uploads come due
                http("POST", url + "/admin/clock", {"advance": 0.5}, API)
            st = http("GET", url + "/api/status", None, API).json()
            return st["openMessages"] == 0 and st["documents"]["pending"] == 0
        wait_until(settled, timeout=message_timeout + 60, what="every message closed and delivered", step=0.2)
        assert svc.stop() == 0, "the collector did not stop cleanly on SIGTERM"
        stub_docs = http("GET", stub_url + "/stub/documents").json()["documents"]
        stub_reqs = http("GET", stub_url + "/stub/requests").json()["requests"]
    finally:
        stop_load.set()
        svc.stop()
        stub.stop()

    # ------------------------------------------------------------- verification
    db = sqlite3.connect(workdir / "collector.db")
    db.row_factory = sqlite3.Row
    msgs = {r["uid"]: r for r in db.execute("SELECT * FROM messages")}
    docs = {r["uid"]: r for r in db.execute("SELECT uid, idempotency_key, state FROM documents")}
    open_left = db.execute("SELECT COUNT(*) FROM open_messages").fetchone()[0]
    db.close()
    held: dict[str, set[int]] = {}
    for uid, r in msgs.items():
        held[uid] = {f["index"] for f in json.loads(r["outcome"]).get("fragments", [])}
    lost = [(uid, i) for (uid, i) in acked if i not in held.get(uid, set())]
    # deadlines: fixed policy, so a message closed by its deadline closed no earlier
    # than opened + timeout, and no later than that plus the longest outage + slack;
    # it opened no later than its first acknowledged fragment (a restart did not
    # give it a fresh deadline)
    slack = max(gaps, default=0) + 2.0
    deadline_violations = []
    for uid, r in msgs.items():
        m = json.loads(r["message"])
        if abs(m["deadline"] - (m["opened"] + message_timeout)) > 1e-6:
            deadline_violations.append(f"{uid}: deadline {m['deadline']} != opened + timeout")
        if uid in first_ack and m["opened"] > first_ack[uid] + 0.01:
            deadline_violations.append(f"{uid}: opened {m['opened']:.3f} after its first ack {first_ack[uid]:.3f}")
        if r["close_reason"] == "deadline" and not (m["deadline"] - 0.01 <= r["closed"] <= m["deadline"] + slack):
            deadline_violations.append(f"{uid}: closed {r['closed'] - m['deadline']:+.2f} s from its deadline")
    keys_stub = [d["idempotencyKey"] for d in stub_docs]
    keys_collector = [d["idempotency_key"] for d in docs.values()]
    uploads_201 = sum(1 for r in stub_reqs if r["status"] == 201)
    figures = {
        "kills": kills,
        "clients": clients,
        "messages_sent": n_msgs,
        "uplinks_posted": counts["posted"],
        "uplinks_acknowledged": counts["acknowledged"],
        "fragments_acknowledged": len(acked),
        "refused_while_down": counts["refused"],
        "answered_503": counts["unavailable"],
        "unexpected_answers": bad_answers[:10],
        "lost": len(lost),
        "lost_examples": lost[:10],
        "messages_closed": len(msgs),
        "open_messages_left": open_left,
        "documents": len(docs),
        "documents_not_delivered": sum(1 for d in docs.values() if d["state"] != "delivered"),
        "documents_at_webapp": len(stub_docs),
        "duplicates_at_webapp": len(keys_stub) - len(set(keys_stub)) + (uploads_201 - len(set(keys_stub))),
        "duplicate_documents_in_collector": len(keys_collector) - len(set(keys_collector)),
        "resent_after_crash_409": sum(1 for r in stub_reqs if r["status"] == 409),
        "keys_missing_at_webapp": len(set(keys_collector) - set(keys_stub)),
        "keys_unexpected": len(set(keys_stub) - set(expected)),
        # a message none of whose fragments was lost on air must be at the Web App
        "whole_messages_missing_at_webapp": sum(1 for k, m in expected.items() if not m.lost and k not in set(keys_stub)),
        "messages_with_a_lost_fragment": sum(1 for m in expected.values() if m.lost),
        "deadline_violations": len(deadline_violations),
        "deadline_examples": deadline_violations[:10],
        "closed_by": {r: sum(1 for m in msgs.values() if m["close_reason"] == r)
                      for r in ("complete", "deadline", "conflict", "evicted")},
        "downtime_s": {"max": round(max(gaps, default=0), 3), "mean": round(sum(gaps) / max(1, len(gaps)), 3)},
    }
    return figures


def _close_at_deadlines(url: str) -> None:
    """Set a manual clock to each open message's deadline in turn (just past it: the
    API shows milliseconds) until none is open."""
    for _ in range(10_000):
        open_ = http("GET", url + "/api/messages?state=open&limit=1000", None, API).json()["messages"]
        if not open_:
            return
        due = min(parse_ms(m["deadline"]) for m in open_) / 1000 + 0.001
        r = http("POST", url + "/admin/clock", {"now": due}, API)
        if r.status == 400:  # the clock is past it already (a restart set it to the wall time)
            r = http("POST", url + "/admin/clock", {"advance": 0}, API)
        assert r.status == 200, r
    raise AssertionError("open messages did not close at their deadlines")


# --------------------------------------------------------------------------- load


async def _load_async(url: str, bodies: list[tuple[str, bytes]], *, concurrency: int, duration: float,
                      rate: float | None, sample: Callable[[], None] | None = None) -> dict[str, Any]:
    """Closed loop (``rate`` None: ``concurrency`` workers back to back) or open
    loop (requests started at ``rate``/s, at most ``concurrency`` in flight)."""
    import aiohttp

    lat: list[float] = []
    statuses: dict[int, int] = {}
    errors: list[str] = []
    idx = 0
    t_end = time.perf_counter() + duration
    conn = aiohttp.TCPConnector(limit=concurrency)
    headers = {**API, "Content-Type": "application/json"}
    late = 0
    async with aiohttp.ClientSession(connector=conn) as sess:
        async def one() -> None:
            nonlocal idx
            path, body = bodies[idx % len(bodies)]
            idx += 1
            t0 = time.perf_counter()
            try:
                async with sess.post(url + path, data=body, headers=headers) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
            except (aiohttp.ClientError, TimeoutError) as e:
                errors.append(type(e).__name__)
                return
            lat.append(time.perf_counter() - t0)

        t_start = time.perf_counter()
        if rate is None:
            async def worker() -> None:
                while time.perf_counter() < t_end:
                    await one()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            sem = asyncio.Semaphore(concurrency)
            pending: set[asyncio.Task] = set()
            n = 0
            next_sample = t_start + 1.0

            async def guarded() -> None:
                async with sem:
                    await one()
            while True:
                now = time.perf_counter()
                if now >= t_end:
                    break
                due = t_start + n / rate
                if due > now:
                    await asyncio.sleep(due - now)
                elif now - due > 0.5:
                    late += 1
                t = asyncio.get_running_loop().create_task(guarded())
                pending.add(t)
                t.add_done_callback(pending.discard)
                n += 1
                if sample and now >= next_sample:
                    sample()
                    next_sample += 1.0
            if pending:
                await asyncio.wait(pending)
        elapsed = time.perf_counter() - t_start
    lat.sort()

    def pct(p: float) -> float | None:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2) if lat else None
    return {"requests": len(lat) + len(errors), "elapsed_s": round(elapsed, 2),
            "rate_per_s": round(len(lat) / elapsed, 1), "statuses": statuses, "errors": len(errors),
            "p50_ms": pct(0.50), "p99_ms": pct(0.99), "max_ms": round(lat[-1] * 1000, 2) if lat else None,
            "late_starts": late}


def load_bodies(n_messages: int, seed: int = 3) -> list[tuple[str, bytes]]:
    """Every fragment of ``n_messages`` distinct messages, as (path, JSON bytes)."""
    out = []
    for j in range(n_messages):
        m = make_message(j % 500, (j // 500) % 256, 1_000_000 + seed * 100_000 + j)
        out.extend((p, json.dumps(b).encode()) for p, b in m.uplinks)
    return out


def load_run(workdir: Path, *, max_seconds: float = 4.0, load_seconds: float = 8.0, fraction: float = 0.8,
             concurrency: int = 16, extra: tuple[str, ...] = (), rate: float | None = None,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure the maximum ingest rate (closed loop, ``max_seconds``), restart on a
    fresh database, then hold ``fraction`` of it (open loop) for ``load_seconds``
    with the delivery agent delivering to the stand-in Web App; RSS sampled each
    second."""
    say = progress or (lambda s: None)
    stub = stub_proc(workdir).start()
    out: dict[str, Any] = {}
    try:
        n_needed = int(2000 * (max_seconds + load_seconds)) // 6 + 300
        bodies = load_bodies(n_needed)
        say(f"{len(bodies)} distinct uplink bodies prepared")
        (workdir / "max").mkdir(exist_ok=True)
        svc = collector_proc(workdir / "max", None, "--log-level", "WARNING").start()
        try:
            mx = asyncio.run(_load_async(base_url(svc), bodies, concurrency=concurrency, duration=max_seconds,
                                         rate=None))
        finally:
            svc.stop()
        out["max"] = mx
        say(f"maximum: {mx['rate_per_s']} req/s (p99 {mx['p99_ms']} ms)")
        target = rate or max(1.0, fraction * mx["rate_per_s"])
        (workdir / "sustained").mkdir(exist_ok=True)
        svc = collector_proc(workdir / "sustained", base_url(stub), "--log-level", "WARNING",
                             "--message-timeout", "2", "--deadline-policy", "fixed", *extra).start()
        rss: list[tuple[float, int]] = []
        t0 = time.monotonic()

        def sample() -> None:
            rss.append((round(time.monotonic() - t0, 2), rss_kb(svc.pid)))
        try:
            sample()
            # the second half of the bodies: distinct from those of the maximum run
            res = asyncio.run(_load_async(base_url(svc), bodies[len(bodies) // 2:] + bodies[:len(bodies) // 2],
                                          concurrency=concurrency * 4, duration=load_seconds, rate=target,
                                          sample=sample))
            sample()
            st = http("GET", base_url(svc) + "/api/status", None, API).json()
        finally:
            svc.stop()
        res["target_rate_per_s"] = round(target, 1)
        res["fraction"] = fraction
        kb = [r for _, r in rss]
        half = len(kb) // 2 or 1
        res["rss_kb"] = {"first": kb[0], "last": kb[-1], "max": max(kb), "samples": rss,
                         "growth_second_half_kb": kb[-1] - kb[half - 1] if len(kb) > 1 else 0}
        res["documents"] = st["documents"]
        out["sustained"] = res
        say(f"sustained {res['rate_per_s']} req/s of target {target:.0f}: p99 {res['p99_ms']} ms, "
            f"statuses {res['statuses']}, RSS {kb[0]}→{kb[-1]} KiB")
    finally:
        stub.stop()
    return out


# --------------------------------------------------------------------------- bounds


def bounds_run(workdir: Path, *, per_device_messages: int = 1000, devices: int = 3000, huge_messages: int = 400,
               max_open_per_device: int = 32, max_open_total: int = 2000, concurrency: int = 16,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Hostile shapes against the open-message caps (lowered so a short run hits
    them): one device opening ``per_device_messages`` messages (msg_id cycling, one
    fragment each), ``devices`` distinct devices with one message each, and
    ``huge_messages`` messages whose fragment 0 announces 255 fragments. Returns RSS
    and DB size over the run and what the incidents and metrics show."""
    say = progress or (lambda s: None)
    svc = collector_proc(workdir, None, "--log-level", "WARNING", "--max-open-per-device", str(max_open_per_device),
                         "--max-open-total", str(max_open_total), "--message-timeout", "3600",
                         "--deadline-policy", "fixed").start()
    url = base_url(svc)
    db = workdir / "collector.db"
    out: dict[str, Any] = {"caps": {"max_open_per_device": max_open_per_device, "max_open_total": max_open_total}}

    def frag_body(dev: str, payload: bytes, n: int) -> tuple[str, bytes]:
        p, b = uplink_body("ttn", AppUplink(dev, 16, n, payload, (T0 + n) * 10**9, dr=5, sf=7, uid=n))
        return p, json.dumps(b).encode()

    def phase(name: str, bodies: list[tuple[str, bytes]]) -> None:
        r = asyncio.run(_post_all(url, bodies, concurrency))
        st = http("GET", url + "/api/status", None, API).json()
        out[name] = {"requests": len(bodies), **r, "rss_kb": rss_kb(svc.pid), "db_bytes": _db_bytes(db),
                     "open_messages": st["openMessages"], "incidents": st["incidents"],
                     "messages": st["messages"]}
        say(f"{name}: {out[name]}")

    try:
        out["baseline"] = {"rss_kb": rss_kb(svc.pid), "db_bytes": _db_bytes(db)}
        rec = wire.encode_record(example_record())
        frags = wire.fragment(0, rec, 51)  # many small fragments: 14+ per message
        one_dev = "70B3D5FFFF000001"
        # msg_id cycles through 0..255; the last byte makes every message distinct
        phase("one_device", [frag_body(one_dev, bytes([i % 256]) + frags[0][1:-1] + bytes([i // 256 % 256]), i)
                             for i in range(per_device_messages)])
        phase("many_devices", [frag_body(f"70B3D5EE{i:08X}", frags[0], 10_000 + i) for i in range(devices)])
        huge = []
        for i in range(huge_messages):
            dev = f"70B3D5DD{i:08X}"
            f0 = bytes([7, 0, 255]) + bytes(range(48))  # announces 255 fragments of 51 bytes
            huge.append(frag_body(dev, f0, 20_000 + i))
            huge.extend(frag_body(dev, bytes([7, j]) + bytes([j]) * 49, 20_000 + i * 300 + j) for j in (1, 2, 3))
        phase("huge_counts", huge)
        metrics = http("GET", url + "/metrics").body.decode()
        out["metrics"] = {line.split(" ")[0]: float(line.split(" ")[1]) for line in metrics.splitlines()
                          if line.startswith(("collector_incidents_total{", "collector_open_messages ",
                                              "collector_messages_closed_total{"))}
        incidents = http("GET", url + "/api/incidents?limit=1000", None, API).json()["incidents"]
        out["incident_codes"] = {c: sum(1 for i in incidents if i["code"] == c)
                                 for c in sorted({i["code"] for i in incidents})}
        out["healthz"] = http("GET", url + "/healthz").status
    finally:
        svc.stop()
    return out


async def _post_all(url: str, bodies: list[tuple[str, bytes]], concurrency: int) -> dict[str, Any]:
    import aiohttp

    statuses: dict[int, int] = {}
    it = iter(bodies)
    headers = {**API, "Content-Type": "application/json"}
    t0 = time.perf_counter()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as sess:
        async def worker() -> None:
            for path, body in it:
                async with sess.post(url + path, data=body, headers=headers) as r:
                    await r.read()
                    statuses[r.status] = statuses.get(r.status, 0) + 1
        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return {"statuses": statuses, "elapsed_s": round(time.perf_counter() - t0, 2)}


def _db_bytes(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


# --------------------------------------------------------------------------- hostile corpus

CORPUS_DIR = Path(__file__).resolve().parent / "corpus"
CORPUS_TOKEN = "corpus-token"
CORPUS_API_TOKEN = "corpus-api-token"
INGEST_TABLES = ("fragments", "open_messages", "messages", "documents", "incidents")


def load_corpus() -> list[dict]:
    """Every corpus line, with its ``category`` (the file name)."""
    items = []
    for f in sorted(CORPUS_DIR.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            d = json.loads(line)
            d["category"] = f.stem
            items.append(d)
    return items


def body_bytes(b: str | dict) -> bytes:
    """A corpus body: a string, ``{"base64"}`` raw bytes or a ``{"repeat"}`` pattern."""
    if isinstance(b, str):
        return b.encode("utf-8")
    if "base64" in b:
        import base64
        return base64.b64decode(b["base64"])
    return (b["prefix"] + b["repeat"] * b["times"] + b["suffix"]).encode()


def ingest_counts(db: Path) -> dict[str, int]:
    c = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {t: c.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0] for t in INGEST_TABLES}  # noqa: S608
    finally:
        c.close()


def corpus_run(workdir: Path) -> dict[str, Any]:
    """Every corpus request against a live collector: answers by category."""
    from collector.testing.harness import LiveService

    db = workdir / "corpus.db"
    by_cat: dict[str, dict[str, int]] = {}
    wrong: list[str] = []
    stored: list[str] = []
    stored_ok = 0
    with LiveService(db, stub=False, ingest_token=[CORPUS_TOKEN], api_token=[CORPUS_API_TOKEN]) as s:
        for case in load_corpus():
            before = ingest_counts(db)
            r = http(case.get("method", "POST"), s.url + case["path"], body_bytes(case["body"]), case["headers"],
                     timeout=30)
            c = by_cat.setdefault(case["category"], {})
            c[str(r.status)] = c.get(str(r.status), 0) + 1
            if r.status != case["expect_status"]:
                wrong.append(f"{case['category']}:{case['name']}: {r.status}")
            if ingest_counts(db) != before:
                if case.get("expect_stored"):
                    stored_ok += 1
                else:
                    stored.append(case["name"])
        healthy = http("GET", s.url + "/healthz").status == 200
    total = sum(sum(c.values()) for c in by_cat.values())
    return {"requests": total, "by_category": by_cat, "unexpected": wrong, "stored_something": stored,
            "stored_as_expected": stored_ok,
            "answers_5xx": sum(n for c in by_cat.values() for st, n in c.items() if st.startswith("5")),
            "healthy_after": healthy}


# --------------------------------------------------------------------------- Web App outage (virtual time)


def outage_run(workdir: Path, *, documents: int = 40, hours: float = 1.0, step: float = 10.0) -> dict[str, Any]:
    """An outage of ``hours`` (virtual) with the default delivery policy: requests
    the stand-in received while down, against the circuit's bound, then how long
    (virtual) until everything is delivered."""
    import math

    from collector.service.keys import CFG
    from collector.testing.harness import LiveService

    with LiveService(workdir / "outage.db") as s:
        cfg = s.app[CFG]
        s.set_faults(outage=True)
        for j in range(documents):
            rec = example_record()
            rec.record_seq = j
            for i, f in enumerate(wire.fragment(j % 200, wire.encode_record(rec), 242)):
                r = s.post(*uplink_body("generic", AppUplink(f"70B3D5AB{j // 200:08X}", 16, j * 8 + i, f,
                                                             (T0 + j) * 10**9)))
                assert r.status == 202, r
        per5: list[int] = []
        n0 = 0
        for k in range(int(hours * 3600 / step)):
            s.advance(step)
            if (k + 1) * step % 300 == 0:
                n = len(s.stub_requests())
                per5.append(n - n0)
                n0 = n
        during = len(s.stub_requests())
        s.set_faults(outage=False)
        t_up = 0.0
        while s.get("/api/status").json()["documents"]["delivered"] < documents and t_up < 24 * 3600:
            s.advance(step)
            t_up += step
        st = s.get("/api/status").json()
        keys = [d["idempotencyKey"] for d in s.stub_documents()]
    bound = cfg.circuit_threshold + cfg.delivery_concurrency + math.ceil(hours * 3600 / cfg.circuit_reset) + 1
    return {"documents": documents, "outage_s": hours * 3600, "clock_step_s": step,
            "requests_during_outage": during, "bound_from_policy": bound,
            "max_requests_per_5_min": max(per5) if per5 else 0,
            "policy": {"circuit_threshold": cfg.circuit_threshold, "circuit_reset_s": cfg.circuit_reset,
                       "delivery_concurrency": cfg.delivery_concurrency, "backoff_base_s": cfg.backoff_base,
                       "backoff_cap_s": cfg.backoff_cap},
            "delivered_after_outage_s": t_up, "delivered": st["documents"]["delivered"],
            "dead": st["documents"]["dead"], "duplicates_at_webapp": len(keys) - len(set(keys))}
