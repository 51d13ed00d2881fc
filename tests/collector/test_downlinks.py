"""Downlinks to v2 devices: each network server's shape and auth (against the
stand-in network server on loopback), the durable outbox on a real SQLite file, and
the agent's retries."""

from __future__ import annotations

import asyncio
import base64

import pytest
from prometheus_client import CollectorRegistry

from collector.service import outbox
from collector.service.clock import ManualClock
from collector.service.config import ServiceConfig
from collector.service.downlinks import DownlinkAgent, NetworkServers, route_from_headers, unavailable
from collector.service.repairs import RepairHub
from collector.service.store import GroupCommitter, Store
from collector.testing.netserver_stub import NetServerConfig, start_netserver

EUI = "70B3D57ED005A1B2"
NEED = bytes([2, 7, 3])


def run(coro):
    return asyncio.run(coro)


async def _send(ns_cfg: NetServerConfig, cfg: ServiceConfig | None, route_of, payload=NEED, replace=False):
    stub, runner, base = await start_netserver(ns_cfg)
    try:
        if cfg is None:
            cfg = ServiceConfig()
        cfg = ServiceConfig(**{**cfg.__dict__, "chirpstack_api_url": cfg.chirpstack_api_url and base,
                               "downlink_url": cfg.downlink_url and base + "/downlink"})
        ns = NetworkServers(cfg)
        await ns.start()
        try:
            out = await ns.send(EUI, route_of(stub, base), payload, replace)
        finally:
            await ns.close()
        return out, stub
    finally:
        await runner.cleanup()


def tts_route(key="NNSXS.good"):
    return lambda stub, base: route_from_headers("ttn", stub.tts_headers(base, EUI, key=key))


# ---------------------------------------------------------------- The Things Stack


def test_tts_push_carries_the_shape_and_the_webhooks_key():
    out, stub = run(_send(NetServerConfig(tts_keys=["NNSXS.good"]), None, tts_route()))
    assert out.outcome == "sent"
    req = stub.requests[-1]
    assert req["path"].endswith(f"/devices/dev-{EUI.lower()}/down/push")
    assert req["headers"]["Authorization"] == "Bearer NNSXS.good"
    assert req["body"] == {"downlinks": [{"f_port": 17, "frm_payload": base64.b64encode(NEED).decode(),
                                          "priority": "NORMAL"}]}
    assert stub.pop(EUI)["payload"] == NEED


def test_tts_replace_uses_the_replace_url():
    out, stub = run(_send(NetServerConfig(tts_keys=["NNSXS.good"]), None, tts_route(), replace=True))
    assert out.outcome == "sent"
    assert stub.requests[-1]["path"].endswith("/down/replace")


def test_tts_wrong_key_is_rejected_and_the_key_is_not_in_the_detail():
    out, stub = run(_send(NetServerConfig(tts_keys=["NNSXS.good"]), None, tts_route("NNSXS.stolen")))
    assert (out.outcome, out.status) == ("rejected", 401)
    assert "NNSXS.stolen" not in (out.detail or "")
    assert stub.queue == {}


def test_route_from_the_webhook_headers():
    h = {"X-Downlink-Apikey": "k", "X-Downlink-Push": "https://eu1.example/push"}
    assert route_from_headers("ttn", h) == {"kind": "tts", "push": "https://eu1.example/push", "replace": None,
                                            "key": "k"}
    assert route_from_headers("ttn", {"X-Downlink-Push": "https://eu1.example/push"}) is None  # no key
    assert route_from_headers("ttn", {**h, "X-Downlink-Push": "file:///etc/passwd"}) is None
    assert route_from_headers("chirpstack", {}) == {"kind": "chirpstack"}
    assert route_from_headers("generic", {}) == {"kind": "generic"}
    cfg = ServiceConfig()
    assert "X-Downlink-Apikey" in unavailable(cfg, None, "ttn")
    assert unavailable(cfg, {"kind": "chirpstack"}) == "chirpstack_api_url is not set"
    assert unavailable(cfg, {"kind": "generic"}) == "downlink_url is not set"
    assert unavailable(cfg, {"kind": "tts", "push": "https://x", "key": "k"}) is None


# ---------------------------------------------------------------- ChirpStack


@pytest.mark.parametrize("header", ["Authorization", "Grpc-Metadata-Authorization"])
def test_chirpstack_queue_item_with_the_configured_auth_header(header):
    cfg = ServiceConfig(chirpstack_api_url="http://x", chirpstack_api_token="cs-token", chirpstack_auth_header=header)
    out, stub = run(_send(NetServerConfig(chirpstack_tokens=["cs-token"]), cfg, lambda s, b: {"kind": "chirpstack"}))
    assert out.outcome == "sent"
    req = stub.requests[-1]
    assert req["path"] == f"/api/devices/{EUI.lower()}/queue"
    assert req["headers"] == {header: "Bearer cs-token"}
    assert req["body"] == {"queueItem": {"confirmed": False, "fPort": 17, "data": base64.b64encode(NEED).decode()}}
    assert stub.pop(EUI)["payload"] == NEED


def test_chirpstack_replace_flushes_the_queue_first_and_a_wrong_token_is_rejected():
    cfg = ServiceConfig(chirpstack_api_url="http://x", chirpstack_api_token="cs-token")
    out, stub = run(_send(NetServerConfig(chirpstack_tokens=["cs-token"]), cfg, lambda s, b: {"kind": "chirpstack"},
                          replace=True))
    assert out.outcome == "sent"
    assert [r["method"] for r in stub.requests] == ["DELETE", "POST"]
    bad = ServiceConfig(chirpstack_api_url="http://x", chirpstack_api_token="nope")
    out, stub = run(_send(NetServerConfig(chirpstack_tokens=["cs-token"]), bad, lambda s, b: {"kind": "chirpstack"}))
    assert (out.outcome, out.status) == ("rejected", 401)


def test_own_format_posts_to_the_configured_url():
    cfg = ServiceConfig(downlink_url="http://x", downlink_token="dl")
    out, stub = run(_send(NetServerConfig(downlink_tokens=["dl"]), cfg, lambda s, b: {"kind": "generic"}))
    assert out.outcome == "sent"
    assert stub.requests[-1]["body"] == {"devEui": EUI, "fPort": 17, "payload": base64.b64encode(NEED).decode(),
                                         "replace": False}


def test_an_unreachable_network_server_is_a_retryable_failure():
    async def go():
        ns = NetworkServers(ServiceConfig(downlink_timeout=2.0))
        await ns.start()
        try:
            return await ns.send(EUI, {"kind": "tts", "push": "http://127.0.0.1:9/push", "key": "k"}, NEED, False)
        finally:
            await ns.close()
    out = run(go())
    assert out.outcome == "failed"


# ---------------------------------------------------------------- the outbox


def rows(store: Store) -> list[tuple]:
    return [tuple(r) for r in store.query("SELECT dev_eui, payload, state, replaces, attempts FROM downlinks")]


def test_one_pending_downlink_per_device_a_newer_one_replaces_it(tmp_path):
    store = Store(tmp_path / "c.db")
    route = {"kind": "tts", "push": "https://x/push", "replace": "https://x/replace", "key": "secret-key"}
    store.apply([outbox.op_repair(EUI, {"s": 1}, route, (b"\x02\x07\x03", ["NEED 7 3"]), 10.0)])
    store.apply([outbox.op_repair(EUI, {"s": 2}, None, (b"\x02\x07\x03\x01\x06", ["NEED 7 3", "ACK 6"]), 11.0)])
    assert rows(store) == [(EUI, b"\x02\x07\x03\x01\x06", "pending", 0, 0)]
    # the first one's hand-over result finds it replaced
    assert store.write(outbox.op_attempt(EUI, b"\x02\x07\x03", ["NEED 7 3"], "sent", None, 12.0, None, None)) is False
    assert store.write(outbox.op_attempt(EUI, b"\x02\x07\x03\x01\x06", [], "sent", None, 12.0, None, {"s": 3}))
    assert rows(store)[0][2] == "sent"
    # a newer one while the network server still holds the last: it must replace it there
    store.apply([outbox.op_repair(EUI, {"s": 4}, None, (b"\x01\x07", ["ACK 7"]), 13.0)])
    assert rows(store) == [(EUI, b"\x01\x07", "pending", 1, 0)]
    store.close()
    # the route (kept from the first uplink) and the state survive a reopen; the key is never shown
    again = Store(tmp_path / "c.db")
    assert outbox.load(again.query) == [(EUI, {"s": 4}, route)]
    view = outbox.device_view(again.query, EUI)
    assert view["route"]["key"] == "***" and "secret-key" not in repr(view)
    again.apply([outbox.op_attempt(EUI, b"\x01\x07", ["ACK 7"], "sent", None, 14.0, None, None),
                 outbox.op_delivered(EUI, {"s": 5}, 15.0)])
    assert rows(again) == []
    again.close()


def test_the_agent_retries_with_backoff_until_the_network_server_takes_it(tmp_path):
    async def go():
        stub, runner, base = await start_netserver(NetServerConfig(tts_keys=["k"]))
        store = Store(tmp_path / "c.db")
        committer = GroupCommitter(store)
        committer.start()
        clock = ManualClock(1000.0)
        cfg = ServiceConfig(downlink_backoff_base=5.0)
        hub = RepairHub(cfg, CollectorRegistry())
        agent = DownlinkAgent(cfg, store, committer, clock, hub)
        await agent.servers.start()
        try:
            route = route_from_headers("ttn", stub.tts_headers(base, EUI, key="k"))
            hub.routes[EUI] = route
            hub.pending[EUI] = NEED
            from collector.core.repair import DeviceRepair
            hub.devices[EUI] = DeviceRepair(EUI)
            await committer.submit(outbox.op_repair(EUI, hub.devices[EUI].to_dict(), route, (NEED, ["NEED 7 3"]),
                                                    clock.now()))
            stub.fail_next = 2
            assert await agent.run_due() == 1          # 503
            assert await agent.run_due() == 0          # not due again before its backoff
            clock.advance(5.0)
            assert await agent.run_due() == 1          # 503 again; the next wait doubles
            clock.advance(5.0)
            assert await agent.run_due() == 0
            clock.advance(5.0)
            assert await agent.run_due() == 1          # taken
            log = [r[0] for r in store.query("SELECT outcome FROM downlink_log ORDER BY id")]
            return log, stub.pop(EUI), hub.sent, rows(store)
        finally:
            await agent.servers.close()
            await committer.close()
            store.close()
            await runner.cleanup()
    log, queued, sent, left = run(go())
    assert log == ["failed", "failed", "sent"]
    assert queued["payload"] == NEED
    assert sent == {EUI}
    assert left == [(EUI, NEED, "sent", 0, 3)]


def test_a_failed_commit_puts_the_devices_repair_state_back():
    """In memory the repair state changes only with what was committed."""
    from collector.core import wire2
    from collector.core.reassembly import FeedResult, PollEvent
    from collector.core.uplink import Uplink
    from collector.service.store import StoreUnavailable

    async def go():
        hub = RepairHub(ServiceConfig(downlink_url="http://127.0.0.1:9/downlink"), CollectorRegistry())
        loop = asyncio.get_running_loop()
        frag = wire2.encode_message(bytes(range(40)), 3, 12, 2)[0]
        e1 = hub.on_uplink(Uplink(EUI, 17, frag, 0, source="generic"), {"kind": "generic"}, FeedResult("accepted"), 1.0)
        ok = loop.create_future()
        ok.set_result(None)
        e1.committed(ok)
        after_first = hub.devices[EUI].to_dict()
        poll = Uplink(EUI, 17, wire2.poll(3, 5, 7), 0, source="generic")
        e2 = hub.on_uplink(poll, None, FeedResult("poll", poll=PollEvent(3, 5, 7, 1, False, False)), 2.0)
        assert e2.queued and hub.pending[EUI][0] == 2 and hub.devices[EUI].messages[3].polls == 1
        failed = loop.create_future()
        failed.set_exception(StoreUnavailable("disk full"))
        e2.committed(failed)
        return hub, after_first
    hub, after_first = run(go())
    assert hub.devices[EUI].to_dict() == after_first
    assert EUI not in hub.pending


def test_repair_settings_from_toml_env_and_their_errors(tmp_path):
    from collector.service.config import load_config

    f = tmp_path / "c.toml"
    f.write_text('[repair]\nrepair_target = 0.999\nchirpstack_api_url = "https://cs.example"\n'
                 'repair_need_repeats = 5\nrepair_ack_repeats = 2\n')
    cfg = load_config(f, env={"COLLECTOR_CHIRPSTACK_AUTH_HEADER": "Grpc-Metadata-Authorization",
                              "COLLECTOR_CHIRPSTACK_API_TOKEN": "t"})
    assert cfg.repair_policy().target == 0.999 and cfg.repair_policy().lower_target == pytest.approx(0.9995)
    assert (cfg.repair_policy().repeats, cfg.repair_policy().ack_repeats) == (5, 2)
    assert cfg.chirpstack_auth_header == "Grpc-Metadata-Authorization"
    assert cfg.redacted()["chirpstack_api_token"] == "***"
    for text, msg in [("repair_target = 1.5", "repair_target"), ("repair_max_parity = 40", "repair_max_parity"),
                      ('downlink_url = "ftp://x"', "downlink_url"), ("repair_ack_repeats = -1", "repair_ack_repeats"), ("repair_tagret = 0.9", "unknown setting")]:
        f.write_text(text + "\n")
        with pytest.raises(ValueError, match=msg):
            load_config(f, env={})


def test_a_downlink_no_network_server_takes_expires(tmp_path):
    async def go():
        store = Store(tmp_path / "c.db")
        committer = GroupCommitter(store)
        committer.start()
        clock = ManualClock(1000.0)
        cfg = ServiceConfig(downlink_backoff_base=5.0, downlink_expiry=60.0, downlink_timeout=2.0)
        hub = RepairHub(cfg, CollectorRegistry())
        agent = DownlinkAgent(cfg, store, committer, clock, hub)
        await agent.servers.start()
        try:
            route = {"kind": "tts", "push": "http://127.0.0.1:9/push", "key": "k"}  # nothing listens
            hub.routes[EUI] = route
            hub.pending[EUI] = NEED
            await committer.submit(outbox.op_repair(EUI, {}, route, (NEED, ["NEED 7 3"]), clock.now()))
            await agent.run_due()
            clock.advance(61.0)
            await agent.run_due()
            log = [r[0] for r in store.query("SELECT outcome FROM downlink_log ORDER BY id")]
            return log, rows(store), dict(hub.pending)
        finally:
            await agent.servers.close()
            await committer.close()
            store.close()
    log, left, pending = run(go())
    assert log == ["failed", "expired"]
    assert left == [] and pending == {}
