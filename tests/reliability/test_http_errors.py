"""Issue 12, items 11 and 14: what aiohttp answers by itself is JSON too (a malformed
request, an unknown route or method, an unknown Expect), and a body the service does
not want is not read: after a 401 or 413 the connection is closed instead of
reading (lingering over) a body announced as 4 GiB. Raw sockets on loopback against
the real service."""

from __future__ import annotations

import json
import socket
import time

import pytest

from collector.testing.harness import INGEST_TOKEN, LiveService

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveService(tmp_path_factory.mktemp("http-errors") / "c.db", stub=False) as s:
        yield s


def _exchange(port: int, data: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(data)
        out = b""
        while True:
            try:
                chunk = s.recv(65536)
            except (TimeoutError, ConnectionResetError):
                break
            if not chunk:
                break
            out += chunk
    return out


def _json_answer(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
    assert headers.get("content-type", "").startswith("application/json"), raw[:300]
    return int(lines[0].split()[1]), json.loads(body)


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"POST /uplink HTTP/1.1\r\nHost: c\r\nthis is no header\r\n\r\n",
    b"POST /uplink HTTP/1.1\r\nHost: c\r\nContent-Length: 12abc\r\n\r\n",
    b"GET /healthz HTTP/9.9\r\nHost: c\r\n\r\n",
    b"POST /uplink HTTP/1.1\r\nHost: c\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
], ids=["request_line", "header_line", "content_length", "http_version", "length_and_chunked"])
def test_a_malformed_request_is_answered_with_json(live, request_bytes):
    status, body = _json_answer(_exchange(live.port, request_bytes))
    assert 400 <= status < 500 and body["error"].startswith("malformed request"), body
    assert "Traceback" not in body["error"]


def test_an_unknown_expect_is_answered_with_json(live):
    raw = _exchange(live.port, b"POST /uplink HTTP/1.1\r\nHost: c\r\nExpect: fly\r\nContent-Length: 2\r\n"
                               b"Authorization: Bearer " + INGEST_TOKEN.encode() + b"\r\nConnection: close\r\n\r\n{}")
    status, body = _json_answer(raw)
    assert status == 417 and "fly" in body["error"]


@pytest.mark.parametrize("token, status", [("wrong", 401), (INGEST_TOKEN, 413)])
def test_a_huge_body_is_not_read_after_its_answer(live, token, status):
    """The client announces 4 GiB and keeps sending: it gets its answer, then the
    connection is closed. aiohttp used to read on for up to 10 s (gigabytes on
    loopback) before closing."""
    s = socket.create_connection(("127.0.0.1", live.port), timeout=10)
    s.sendall(b"POST /uplink HTTP/1.1\r\nHost: c\r\nContent-Type: application/json\r\n"
              b"Authorization: Bearer " + token.encode() + b"\r\nContent-Length: 4294967296\r\n\r\n")
    s.settimeout(10)
    answer = s.recv(65536)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()), answer[:200]
    sent, chunk = 0, b"x" * 65536
    s.settimeout(5)
    t0 = time.monotonic()
    try:
        while sent < 4 * 2**30 and time.monotonic() - t0 < 20:
            sent += s.send(chunk)
    except OSError:  # reset or broken pipe: the server closed the connection
        pass
    finally:
        s.close()
    assert sent < 64 * 2**20, f"the server read {sent / 2**20:.0f} MiB after answering {status}"


@pytest.mark.parametrize("token, status", [("wrong", 401), (INGEST_TOKEN, 413)])
def test_a_client_sending_a_body_of_a_few_mib_still_reads_its_answer(live, token, status):
    """Up to 4 MiB announced, the unwanted body is read and dropped: a client that
    writes the whole body before reading (as urllib does) gets the answer, not a
    broken pipe."""
    from collector.testing.harness import http
    for _ in range(3):
        r = http("POST", live.url + "/uplink", b"{" + b" " * (3 * 2**20) + b"}",
                 {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        assert r.status == status and r.json()["error"], r
