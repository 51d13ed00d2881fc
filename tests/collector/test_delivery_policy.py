"""The delivery policy (sans-IO): classification, backoff with full jitter, circuit, max age."""

from __future__ import annotations

import random

import pytest

from collector.service.delivery import Attempt, Backoff, Circuit, classify, decide, parse_retry_after


@pytest.mark.parametrize("status,kind", [
    (200, "delivered"), (201, "delivered"), (204, "delivered"), (409, "delivered"),
    (408, "retry"), (425, "retry"), (429, "retry"), (500, "retry"), (502, "retry"), (503, "retry"),
    (None, "retry"),
    (400, "dead"), (401, "dead"), (403, "dead"), (404, "dead"), (413, "dead"), (422, "dead"), (301, "dead"),
])
def test_classify(status, kind):
    assert classify(status) == kind


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("120", 0) == 120
    assert parse_retry_after("Thu, 01 Jan 1970 00:02:00 GMT", 60) == 60
    assert parse_retry_after("soon", 0) is None
    assert parse_retry_after(None, 0) is None


def test_full_jitter_stays_under_the_exponential_ceiling_and_is_seeded():
    b = Backoff(2.0, 100.0, random.Random(1))
    draws = [[b.delay(n) for _ in range(200)] for n in range(8)]
    for n, ds in enumerate(draws):
        ceiling = min(100.0, 2.0 * 2**n)
        assert all(0 <= d <= ceiling for d in ds)
        assert max(ds) > 0.8 * ceiling  # the whole range is used (full jitter)
    again = Backoff(2.0, 100.0, random.Random(1))
    assert [again.delay(0) for _ in range(200)] == draws[0]


def test_retry_after_is_a_floor():
    b = Backoff(1.0, 10.0, random.Random(0))
    assert all(b.delay(0, retry_after=30) >= 30 for _ in range(50))


def test_circuit_opens_after_threshold_and_probes_once():
    c = Circuit(threshold=3, reset=30)
    for t in range(2):
        c.failure(t)
        assert c.allow(t)
    c.failure(2)
    assert c.state(2) == "open" and not c.allow(10)
    assert c.state(32) == "half-open"
    assert c.allow(32) and not c.allow(32)  # one probe at a time
    c.failure(33)  # the probe failed: open again
    assert c.state(34) == "open" and c.open_until == 63
    assert c.allow(63)
    c.success()
    assert c.state(64) == "closed" and c.allow(64) and c.allow(64)


def test_decide_schedules_retries_then_dead_letters_at_max_age():
    b = Backoff(10.0, 1000.0, random.Random(3))
    r = decide("u", Attempt(503), attempts_before=0, created=0, now=5, max_age=100, backoff=b)
    assert r.result == "retry" and 5 <= r.next_attempt <= 15
    # near the maximum age: dead exactly when the retry the same draw gives would come after it
    outcomes = set()
    for seed in range(40):
        delay = Backoff(10.0, 10.0, random.Random(seed)).delay(20)
        r = decide("u", Attempt(None, "refused"), attempts_before=20, created=0, now=95, max_age=100,
                   backoff=Backoff(10.0, 10.0, random.Random(seed)))
        expected = "dead" if 95 + delay > 100 else "retry"
        assert r.result == expected, (seed, delay, r)
        assert (r.next_attempt is None) == (expected == "dead") and (expected == "retry" or "maximum age" in r.dead_reason)
        outcomes.add(r.result)
    assert outcomes == {"retry", "dead"}  # both sides of the limit were drawn
    r = decide("u", Attempt(None, "refused", retry_after=30), attempts_before=0, created=0, now=95, max_age=100,
               backoff=b)
    assert r.result == "dead" and "maximum age" in r.dead_reason  # a Retry-After beyond the limit
    r = decide("u", Attempt(500), attempts_before=3, created=0, now=101, max_age=100, backoff=b)
    assert r.result == "dead" and "maximum age" in r.dead_reason
    r = decide("u", Attempt(403, response='{"error": "forbidden"}'), 0, 0, 1, 100, b)
    assert (r.result, r.response) == ("dead", '{"error": "forbidden"}')
    assert decide("u", Attempt(409), 0, 0, 1, 100, b).result == "delivered"
