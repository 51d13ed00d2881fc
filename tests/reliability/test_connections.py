"""Issue 12, item 12: connections are bounded. Under a file descriptor limit of 200,
250 half-sent requests do not keep a real uplink out (it waited 16 s), and the
event loop's accept failures are not logged as a traceback each (24 MB in 20 s).
A real ``collector serve`` process with a low RLIMIT_NOFILE, raw sockets."""

from __future__ import annotations

import logging
import os
import resource
import signal
import socket
import subprocess
import sys

import pytest

from collector.core import wire
from collector.service.errors import RateLimitedLog
from collector.testing.examples import example_record
from collector.testing.harness import free_port, http, wait_until
from devicesim.formats import AppUplink, uplink_body

pytestmark = pytest.mark.timeout(90)
TOKEN = "conn-token"


def _low_fd_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


def test_half_sent_requests_beyond_the_fd_limit_do_not_keep_an_uplink_out(tmp_path):
    port = free_port()
    log = tmp_path / "collector.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    with log.open("wb") as out:
        p = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--port", str(port), "--db",
                              str(tmp_path / "c.db"), "--ingest-token", TOKEN, "--read-timeout", "60"],
                             stdout=out, stderr=out, env=env, preexec_fn=_low_fd_limit)
    socks: list[socket.socket] = []
    try:
        wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/healthz", timeout=2).status == 200, 60,
                   "the service")
        for _ in range(250):
            s = socket.socket()
            s.settimeout(5)
            try:
                s.connect(("127.0.0.1", port))
                s.sendall(b"POST /uplink HTTP/1.1\r\nHost: c\r\n")  # never finished
            except OSError:
                s.close()
                continue
            socks.append(s)
        frag = wire.fragment(7, wire.encode_record(example_record()), 115)[0]
        path, body = uplink_body("generic", AppUplink("70B3D57ED0C0FF12", 16, 1, frag, 1_800_000_000 * 10**9))
        try:
            r = http("POST", f"http://127.0.0.1:{port}{path}", body, {"Authorization": f"Bearer {TOKEN}"},
                     timeout=10)
        except OSError as e:
            raise AssertionError(f"no answer to a real uplink ({e}); log:\n{log.read_text()[-2000:]}") from None
        assert r.status == 202 and r.json()["status"] == "accepted", r
    finally:
        for s in socks:
            s.close()
        p.send_signal(signal.SIGTERM)
        p.wait(30)
    text = log.read_text()
    assert "event=connection_evicted" in text
    assert "Traceback" not in text and text.count("event=accept_failed") <= 3


def test_the_accept_failure_log_is_one_line_now_and_then():
    logger = logging.getLogger("test.accept")
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger.addHandler(Keep())
    limiter = RateLimitedLog(logger, every=3600)
    logger.addFilter(limiter.filter)
    try:
        for _ in range(1000):
            try:
                raise OSError(24, "Too many open files")
            except OSError:
                logger.error("socket.accept() out of system resource", exc_info=True)
        logger.error("something else")
    finally:
        logger.removeFilter(limiter.filter)
    assert len(records) == 2
    assert records[0].getMessage().startswith("event=accept_failed") and records[0].exc_info is None
    assert records[0].levelname == "WARNING" and records[1].getMessage() == "something else"
