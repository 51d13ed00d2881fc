"""Issue 12, item 18: the API has its own token. An ingest token (every network
server holds one) opens neither ``/api`` nor ``/admin``, a route-scoped token
(``ttn_token``) neither; without ``api_token`` the API is closed. A password in
``webapp_url`` is not shown where the settings are logged."""

from __future__ import annotations

from collector.service.config import ServiceConfig
from collector.testing.harness import API_TOKEN, INGEST_TOKEN, LiveService, http


def _get(live: LiveService, path: str, token: str):
    return http("GET", live.url + path, None, {"Authorization": f"Bearer {token}"})


def test_without_an_api_token_the_api_is_closed(tmp_path):
    with LiveService(tmp_path / "c.db", stub=False, api_token=[]) as live:
        for path in ("/api/status", "/api/messages", "/api/deadletters"):
            r = _get(live, path, INGEST_TOKEN)
            assert r.status == 401 and "no api_token" in r.json()["error"], r
        r = http("POST", live.url + "/api/deadletters/retry", b"", {"Authorization": f"Bearer {INGEST_TOKEN}"})
        assert r.status == 401, r
        assert http("GET", live.url + "/healthz").status == 200


def test_ingest_and_route_tokens_do_not_open_the_api_the_api_token_does(tmp_path):
    with LiveService(tmp_path / "c.db", stub=False, ingest_token=["all-routes"], ttn_token=["ttn-only"]) as live:
        for token in ("all-routes", "ttn-only"):
            assert _get(live, "/api/status", token).status == 401
            r = http("POST", live.url + "/api/deadletters/retry", b"", {"Authorization": f"Bearer {token}"})
            assert r.status == 401, r
            r = http("POST", live.url + "/admin/clock", {"advance": 1}, {"Authorization": f"Bearer {token}"})
            assert r.status == 401, r
        assert _get(live, "/api/status", API_TOKEN).status == 200
        # and the API token is no ingest token
        r = http("POST", live.url + "/uplink", {"devEui": "70B3D57ED0C0FFEE", "fPort": 16, "payload": "AQ=="},
                 {"Authorization": f"Bearer {API_TOKEN}"})
        assert r.status == 401, r


def test_a_password_in_webapp_url_is_redacted_in_the_logged_settings():
    from collector.service import config
    cfg = ServiceConfig(webapp_url="https://collector:pw-Secret-42@webapp.example/base", ingest_token=["t"])
    assert config.redact_url(cfg.webapp_url) == "https://***@webapp.example/base"
    assert "pw-Secret-42" not in str(cfg.redacted())
    assert config.redact_url("https://webapp.example/") == "https://webapp.example/"
