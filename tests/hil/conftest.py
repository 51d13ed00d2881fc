"""Fixtures for the radio-rig tests: emulators on real pseudo-terminals, fast
deadlines, and a small HTTP server on loopback standing in for the collector."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from aiohttp import web

from collector.core import wire
from hil.emulator import Air, EmulatorConfig, Faults, PtyEmulator, start_emulator
from hil.modem import Modem, RecoveryPolicy, Timeouts
from hil.rak3172 import RAK3172
from hil.rn2483 import RN2483

#: deadlines small enough for an emulator at speed 0, large enough for a busy CI box
FAST = Timeouts(command=1.5, tx_base=0.6, tx_airtime_factor=0.0, join=1.5, reset=1.5)
QUICK_RETRY = RecoveryPolicy(busy_retries=3, first_delay_s=0.01, factor=2.0, max_delay_s=0.05)
DRIVERS: dict[str, type[Modem]] = {"rn2483": RN2483, "rak3172": RAK3172}


def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> object:
    """Poll ``cond`` until it is truthy; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class Rig:
    emu: PtyEmulator
    modem: Modem
    faults: Faults

    @property
    def model(self):
        return self.emu.model


@pytest.fixture
def rig_factory() -> Iterator[Callable[..., Rig]]:
    """``rig_factory(module, region=..., **config)`` → an emulator and a driver on its tty."""
    made: list[Rig] = []

    def make(module: str, region: str = "US915", *, policy: RecoveryPolicy = QUICK_RETRY,
             timeouts: Timeouts = FAST, air: Air | None = None, on_tx=None, **config) -> Rig:
        config.setdefault("speed", 0.0)
        faults = Faults()
        emu = start_emulator(module, EmulatorConfig(region=region, **config), faults=faults, air=air, on_tx=on_tx)
        modem = DRIVERS[module](emu.path, timeouts=timeouts, policy=policy)
        rig = Rig(emu, modem, faults)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.modem.close()
        rig.emu.stop()


# --------------------------------------------------------------------------- stand-in collector


def _uplink_of(path: str, body: dict) -> tuple[str, bytes]:
    """(DEVEUI, payload) of a body in any of the three formats."""
    if path.startswith("/uplink/ttn"):
        return body["end_device_ids"]["dev_eui"].upper(), base64.b64decode(body["uplink_message"]["frm_payload"])
    if path.startswith("/uplink/chirpstack"):
        return body["deviceInfo"]["devEui"].upper(), base64.b64decode(body["data"])
    return body["devEui"].upper(), base64.b64decode(body["payload"])


@dataclass
class StandIn:
    """A loopback HTTP server that records every POST and answers the collector's
    message API from the fragments it received (complete when all arrived)."""

    base_url: str = ""
    token: str | None = None
    requests: list[tuple[str, dict, dict]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def posts(self) -> list[tuple[str, dict]]:
        with self.lock:
            return [(p, b) for p, b, _h in self.requests]

    def messages(self, dev_eui: str) -> list[dict]:
        groups: dict[int, dict[int, wire.Fragment]] = {}
        with self.lock:
            reqs = list(self.requests)
        for path, body, _h in reqs:
            eui, payload = _uplink_of(path, body)
            if eui != dev_eui.upper():
                continue
            f = wire.parse_fragment(payload)
            groups.setdefault(f.msg_id, {})[f.index] = f
        out = []
        for msg_id, frags in sorted(groups.items()):
            count = frags[0].count if 0 in frags else None
            complete = count is not None and all(i in frags for i in range(count))
            out.append({
                "id": f"{dev_eui}-{msg_id}", "devEui": dev_eui.upper(), "msgId": msg_id,
                "state": "complete" if complete else "open", "fragmentsExpected": count,
                "fragmentsReceived": len(frags), "delivery": "delivered" if complete else None,
            })
        return out

    def _authorized(self, request: web.Request) -> bool:
        return self.token is None or request.headers.get("Authorization") == f"Bearer {self.token}"

    async def post(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        body = await request.json()
        with self.lock:
            self.requests.append((request.path_qs, body, dict(request.headers)))
        return web.json_response({"status": "accepted"}, status=202)

    async def get_messages(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return web.json_response({"error": "unauthorized"}, status=401)
        return web.json_response({"messages": self.messages(request.query.get("device", ""))})


@pytest.fixture
def stand_in() -> Iterator[StandIn]:
    s = StandIn()
    app = web.Application()
    app.router.add_post("/uplink", s.post)
    app.router.add_post("/uplink/ttn", s.post)
    app.router.add_post("/uplink/chirpstack", s.post)
    app.router.add_get("/api/messages", s.get_messages)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        port = runner.addresses[0][1]
        s.base_url = f"http://127.0.0.1:{port}"
        started.set()

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        loop.run_forever()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert started.wait(10), "stand-in server did not start"
    yield s
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    t.join(10)


@pytest.fixture
def until() -> Callable[..., object]:
    """``until(cond, timeout, what)``: poll a condition with a deadline."""
    return wait_for


@pytest.fixture
def fast() -> Timeouts:
    return FAST


@pytest.fixture
def quick_retry() -> RecoveryPolicy:
    return QUICK_RETRY
