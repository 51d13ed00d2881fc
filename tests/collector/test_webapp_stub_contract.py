"""The stand-in Web App implements the upload contract and injects faults on demand."""

from __future__ import annotations

import pytest

from collector.core.xmldoc import Transport, build_document
from collector.testing.examples import EXAMPLE_DEV_EUI, example_record
from collector.testing.harness import WEBAPP_TOKEN, LiveService, http

XML = build_document(example_record(), EXAMPLE_DEV_EUI, Transport(1, 6, 6, 0, 1000), True)
HEADERS = {"Content-Type": "application/xml; charset=utf-8", "Authorization": f"Token {WEBAPP_TOKEN}",
           "Idempotency-Key": "K-1"}


@pytest.fixture()
def stub(tmp_path):
    s = LiveService(tmp_path / "c.db", stub_users={"u": "p"})
    with s:
        yield s


def upload(s, body=XML, **headers):
    h = {**HEADERS, **headers}
    return http("POST", s.stub_url + "/api/measurements/upload/", body, {k: v for k, v in h.items() if v})


def test_contract(stub):
    assert upload(stub, Authorization="Token nope").status == 401
    assert upload(stub, Authorization=None).status == 401
    assert upload(stub, **{"Idempotency-Key": None}).status == 400
    assert upload(stub, **{"Content-Type": "text/plain"}).status == 415
    bad = upload(stub, XML.replace(b'schemaVersion="1"', b'schemaVersion="2"'))
    assert bad.status == 400 and bad.json()["details"]
    assert upload(stub, b"<not xml").status == 400
    ok = upload(stub)
    assert ok.status == 201
    assert upload(stub).status == 409
    (doc,) = stub.stub_documents()
    assert doc["idempotencyKey"] == "K-1" and doc["xml"].encode() == XML


def test_login_issues_tokens_that_can_expire(stub):
    assert http("POST", stub.stub_url + "/api/auth/login/", {"username": "u", "password": "x"}).status == 401
    tok = http("POST", stub.stub_url + "/api/auth/login/", {"username": "u", "password": "p"}).json()["token"]
    assert upload(stub, Authorization=f"Token {tok}").status == 201
    http("POST", stub.stub_url + "/stub/expire-tokens")
    assert upload(stub, Authorization=f"Token {tok}", **{"Idempotency-Key": "K-2"}).status == 401


def test_faults(stub):
    stub.set_faults(outage=True)
    r = upload(stub)
    assert r.status == 503 and r.headers["Retry-After"] == "5"
    stub.set_faults(outage=False, throttle_next=1, retry_after=7)
    r = upload(stub)
    assert r.status == 429 and r.headers["Retry-After"] == "7"
    stub.set_faults(fail_next=1, error_status=502)
    assert upload(stub).status == 502
    stub.set_faults(error_rate=1.0, error_status=500)
    assert upload(stub).status == 500
    stub.set_faults(error_rate=0.0, reject_status=422)
    assert upload(stub).status == 422
    stub.set_faults(reject_status=None)
    assert upload(stub).status == 201
    assert http("POST", stub.stub_url + "/stub/faults", {"nonsense": 1}).status == 400
    stats = http("GET", stub.stub_url + "/stub/stats").json()
    assert stats["requests"] == {"201": 1, "429": 1, "500": 1, "502": 1, "503": 1, "422": 1}


def test_error_rate_is_seeded(tmp_path):
    def run() -> list[int]:
        with LiveService(tmp_path / "c.db") as s:
            s.set_faults(error_rate=0.5)
            return [upload(s, **{"Idempotency-Key": f"K{i}"}).status for i in range(20)]
    a, b = run(), run()
    assert a == b and 500 in a and 201 in a
