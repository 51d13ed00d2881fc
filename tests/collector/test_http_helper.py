"""The one blocking HTTP client of the tests and tools: an HTTP answer is returned
whatever its status, no answer raises OSError (real sockets on loopback)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collector.testing.harness import free_port
from collector.testing.http import http


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        reply = json.dumps({"auth": self.headers.get("Authorization"), "type": self.headers.get("Content-Type"),
                            "body": body.decode()}).encode()
        self.send_response(422)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_an_error_status_is_an_answer_not_an_exception(echo):
    r = http("POST", echo + "/x", {"a": 1, "b": [2]}, token="s3cret", compact=True)
    assert r.status == 422
    assert r.json() == {"auth": "Bearer s3cret", "type": "application/json", "body": '{"a":1,"b":[2]}'}
    assert json.loads(r.text)["auth"] == "Bearer s3cret"
    assert json.loads(http("POST", echo, [1, 2]).json()["body"]) == [1, 2]


def test_no_answer_raises_oserror():
    with pytest.raises(OSError):
        http("GET", f"http://127.0.0.1:{free_port()}/", timeout=2)
