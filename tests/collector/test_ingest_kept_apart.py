"""Issue 12, item 17: data is never acknowledged and dropped. A ChirpStack POST whose
``?event=`` was stripped may be an uplink: 400, not 202 ``ignored``. Uplinks The
Things Stack simulated from its console are not measurement data: by default
answered 202 ``ignored`` and counted apart (``simulated_uplinks``), refused with 400
or stored as real data when configured so."""

from __future__ import annotations

import pytest

from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import LiveService
from devicesim.formats import AppUplink, uplink_body

DEV = "70B3D57ED0C0FF17"
FRAG = wire.fragment(3, wire.encode_record(example_record()), 115)[0]


def _body(fmt: str) -> tuple[str, dict]:
    return uplink_body(fmt, AppUplink(DEV, 16, 1, FRAG, 1_800_000_000 * 10**9, dr=3, sf=9))


def _stored(live) -> int:
    return live.get("/api/status").json()["fragments"]


def _metric(live, outcome: str) -> float:
    for line in live.get("/metrics").body.decode().splitlines():
        if line.startswith("collector_uplinks_total{") and f'outcome="{outcome}"' in line \
                and 'integration="ttn"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    with LiveService(tmp_path_factory.mktemp("apart") / "c.db", stub=False) as s:
        yield s


@pytest.mark.parametrize("path", ["/uplink/chirpstack", "/uplink/chirpstack?event=", "/uplink/chirpstack?x=up"])
def test_a_chirpstack_post_without_its_event_is_refused_not_acknowledged(live, path):
    _, body = _body("chirpstack")
    before = _stored(live)
    r = live.post(path, body)
    assert r.status == 400, r
    assert "no ChirpStack event given" in r.json()["error"]
    assert _stored(live) == before
    assert live.post("/uplink/chirpstack?event=up", body).json()["status"] in ("accepted", "duplicate")


def test_a_simulated_tts_uplink_is_ignored_and_counted_apart_by_default(live):
    path, body = _body("ttn")
    before = _stored(live)
    r = live.post(path, {**body, "simulated": True})
    assert r.status == 202 and r.json()["status"] == "ignored" and "simulated" in r.json()["reason"], r
    assert _stored(live) == before
    assert _metric(live, "simulated") == 1.0


@pytest.mark.parametrize("mode, status, stored", [("reject", 400, 0), ("accept", 202, 1)])
def test_simulated_uplinks_setting(tmp_path, mode, status, stored):
    path, body = _body("ttn")
    with LiveService(tmp_path / "c.db", stub=False, simulated_uplinks=mode) as live:
        r = live.post(path, {**body, "simulated": True})
        assert r.status == status, r
        assert (r.json().get("status") == "accepted") == bool(stored), r
        assert _stored(live) == stored, live.get("/api/status").json()
