"""A stand-in network server for downlinks: what the collector pushes to, and what
whoever plays the device (the simulator, the bench bridge, a test) pulls from.

Network-server side (the shapes of ``docs/spec/ingest-formats.md``):

- The Things Stack: ``POST /api/v3/as/applications/{app}/webhooks/{hook}/devices/{dev}/down/push``
  and ``.../down/replace`` with ``Authorization: Bearer <key>`` (401 unless the key
  is one of ``tts_keys``) and ``{"downlinks": [{"f_port", "frm_payload", "priority"}]}``.
  :meth:`NetServerStub.tts_headers` gives the ``X-Downlink-*`` headers a webhook
  for a device would carry.
- ChirpStack v4: ``POST /api/devices/{devEui}/queue`` with
  ``{"queueItem": {"confirmed", "fPort", "data"}}`` and ``DELETE`` of the same path
  (flush), authorised by ``Authorization: Bearer <token>`` or
  ``Grpc-Metadata-Authorization: Bearer <token>``.
- The collector's own format: ``POST /downlink`` with ``{"devEui", "fPort",
  "payload", "replace"}`` (``Authorization: Bearer <token>`` when tokens are set).

Each device's queue has replace semantics: a push or enqueue replaces what is
queued (as the collector keeps at most one downlink per device pending), so the
queue holds at most one downlink.

Device side: ``GET /devices/{eui}/next`` pops the queued downlink (``{"fPort",
"payload" (base64), "hex"}``, or 204 when none); ``GET /stub/requests`` lists every
request the stub took (method, path, status, device, body), ``GET /stub/queue``
what is queued, ``POST /stub/faults`` ``{"fail_next": n, "status": 503}`` answers
the next n network-server requests with that status.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import threading
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger("collector.netserver_stub")

TTS_PREFIX = "/api/v3/as/applications/{app}/webhooks/{hook}/devices/{dev}/down"


@dataclass
class NetServerConfig:
    tts_keys: list[str] = field(default_factory=list)
    chirpstack_tokens: list[str] = field(default_factory=list)
    downlink_tokens: list[str] = field(default_factory=list)


class NetServerStub:
    def __init__(self, cfg: NetServerConfig | None = None):
        self.cfg = cfg or NetServerConfig()
        #: DevEUI (upper case) → the queued downlink {"fPort", "payload" (bytes), "via"}
        self.queue: dict[str, dict] = {}
        #: TTS device id → DevEUI (learnt from tts_headers; otherwise the id is taken as the DevEUI)
        self.device_ids: dict[str, str] = {}
        self.requests: list[dict] = []
        self.fail_next = 0
        self.fail_status = 503

    # ------------------------------------------------------------------ helpers for the device side

    def tts_headers(self, base_url: str, dev_eui: str, device_id: str | None = None, key: str | None = None,
                    app: str = "field-loggers", hook: str = "collector") -> dict[str, str]:
        """The ``X-Downlink-*`` headers a The Things Stack webhook carries for this device."""
        device_id = device_id or f"dev-{dev_eui.lower()}"
        self.device_ids[device_id] = dev_eui.upper()
        prefix = base_url.rstrip("/") + TTS_PREFIX.format(app=app, hook=hook, dev=device_id)
        return {"X-Downlink-Apikey": key if key is not None else (self.cfg.tts_keys or ["NNSXS.stub"])[0],
                "X-Downlink-Push": prefix + "/push", "X-Downlink-Replace": prefix + "/replace"}

    def pop(self, dev_eui: str) -> dict | None:
        return self.queue.pop(dev_eui.upper(), None)

    # ------------------------------------------------------------------ HTTP

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024)
        r = app.router
        r.add_post(TTS_PREFIX + "/push", self._tts)
        r.add_post(TTS_PREFIX + "/replace", self._tts)
        r.add_post("/api/devices/{eui}/queue", self._chirpstack)
        r.add_delete("/api/devices/{eui}/queue", self._chirpstack_flush)
        r.add_post("/downlink", self._generic)
        r.add_get("/devices/{eui}/next", self._next)
        r.add_get("/stub/requests", self._requests)
        r.add_get("/stub/queue", self._queue)
        r.add_post("/stub/faults", self._faults)
        return app

    def _answer(self, request: web.Request, status: int, body: dict, dev: str | None = None,
                payload: Any = None) -> web.Response:
        self.requests.append({"method": request.method, "path": request.path, "status": status, "device": dev,
                              "body": payload, "headers": {k: v for k, v in request.headers.items()
                                                           if k.lower() in ("authorization",
                                                                            "grpc-metadata-authorization")}})
        return web.json_response(body, status=status)

    @staticmethod
    def _bearer(value: str | None, accepted: list[str]) -> bool:
        if not value or not value.startswith("Bearer "):
            return False
        got = value[7:].encode()
        return any(hmac.compare_digest(got, t.encode()) for t in accepted)

    def _fault(self) -> int | None:
        if self.fail_next > 0:
            self.fail_next -= 1
            return self.fail_status
        return None

    async def _json(self, request: web.Request) -> Any:
        try:
            return await request.json()
        except ValueError:
            return None

    def _enqueue(self, dev: str, fport: Any, data: Any, via: str) -> str | None:
        if not isinstance(fport, int) or not 1 <= fport <= 223 or not isinstance(data, str):
            return "need an fPort 1..223 and a base64 payload"
        try:
            payload = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError):
            return "the payload is not base64"
        self.queue[dev] = {"fPort": fport, "payload": payload, "via": via}
        return None

    async def _tts(self, request: web.Request) -> web.Response:
        device_id = request.match_info["dev"]
        dev = self.device_ids.get(device_id, device_id.upper())
        body = await self._json(request)
        if not self._bearer(request.headers.get("Authorization"), self.cfg.tts_keys):
            return self._answer(request, 401, {"code": 16, "message": "unauthenticated"}, dev, body)
        if (status := self._fault()) is not None:
            return self._answer(request, status, {"message": "injected fault"}, dev, body)
        items = body.get("downlinks") if isinstance(body, dict) else None
        if not isinstance(items, list) or len(items) != 1 or not isinstance(items[0], dict) \
                or items[0].get("priority") not in ("LOWEST", "LOW", "BELOW_NORMAL", "NORMAL", "ABOVE_NORMAL",
                                                    "HIGH", "HIGHEST"):
            return self._answer(request, 400, {"message": "expected {downlinks: [{f_port, frm_payload, "
                                                          "priority}]}"}, dev, body)
        err = self._enqueue(dev, items[0].get("f_port"), items[0].get("frm_payload"),
                            "tts-" + request.path.rsplit("/", 1)[1])
        if err:
            return self._answer(request, 400, {"message": err}, dev, body)
        return self._answer(request, 200, {}, dev, body)

    def _chirpstack_auth(self, request: web.Request) -> bool:
        return any(self._bearer(request.headers.get(h), self.cfg.chirpstack_tokens)
                   for h in ("Authorization", "Grpc-Metadata-Authorization"))

    async def _chirpstack(self, request: web.Request) -> web.Response:
        dev = request.match_info["eui"].upper()
        body = await self._json(request)
        if not self._chirpstack_auth(request):
            return self._answer(request, 401, {"code": 16, "message": "authentication failed"}, dev, body)
        if (status := self._fault()) is not None:
            return self._answer(request, status, {"message": "injected fault"}, dev, body)
        item = body.get("queueItem") if isinstance(body, dict) else None
        if not isinstance(item, dict) or item.get("confirmed") is not False:
            return self._answer(request, 400, {"message": "expected {queueItem: {confirmed, fPort, data}}"}, dev,
                                body)
        err = self._enqueue(dev, item.get("fPort"), item.get("data"), "chirpstack")
        if err:
            return self._answer(request, 400, {"message": err}, dev, body)
        return self._answer(request, 200, {"id": f"q-{len(self.requests)}"}, dev, body)

    async def _chirpstack_flush(self, request: web.Request) -> web.Response:
        dev = request.match_info["eui"].upper()
        if not self._chirpstack_auth(request):
            return self._answer(request, 401, {"code": 16, "message": "authentication failed"}, dev)
        self.queue.pop(dev, None)
        return self._answer(request, 200, {}, dev)

    async def _generic(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        dev = str(body.get("devEui", "")).upper() if isinstance(body, dict) else ""
        if self.cfg.downlink_tokens and not self._bearer(request.headers.get("Authorization"),
                                                         self.cfg.downlink_tokens):
            return self._answer(request, 401, {"error": "missing or wrong token"}, dev, body)
        if (status := self._fault()) is not None:
            return self._answer(request, status, {"error": "injected fault"}, dev, body)
        if not dev:
            return self._answer(request, 400, {"error": "devEui required"}, dev, body)
        err = self._enqueue(dev, body.get("fPort"), body.get("payload"), "generic")
        if err:
            return self._answer(request, 400, {"error": err}, dev, body)
        return self._answer(request, 202, {"queued": True}, dev, body)

    async def _next(self, request: web.Request) -> web.Response:
        d = self.pop(request.match_info["eui"])
        if d is None:
            return web.Response(status=204)
        return web.json_response({"fPort": d["fPort"], "payload": base64.b64encode(d["payload"]).decode(),
                                  "hex": d["payload"].hex(), "via": d["via"]})

    async def _requests(self, request: web.Request) -> web.Response:
        return web.json_response({"requests": self.requests})

    async def _queue(self, request: web.Request) -> web.Response:
        return web.json_response({dev: {"fPort": d["fPort"], "hex": d["payload"].hex(), "via": d["via"]}
                                  for dev, d in self.queue.items()})

    async def _faults(self, request: web.Request) -> web.Response:
        body = await self._json(request)
        if not isinstance(body, dict) or not isinstance(body.get("fail_next", 0), int):
            return web.json_response({"error": 'give {"fail_next": n, "status": 503}'}, status=400)
        self.fail_next = body.get("fail_next", 0)
        self.fail_status = int(body.get("status", 503))
        return web.json_response({"fail_next": self.fail_next, "status": self.fail_status})


async def start_netserver(cfg: NetServerConfig | None = None, host: str = "127.0.0.1",
                          port: int = 0) -> tuple[NetServerStub, web.AppRunner, str]:
    """Start the stub in the running loop; returns ``(stub, runner, base_url)``."""
    stub = NetServerStub(cfg)
    runner = web.AppRunner(stub.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    addr = runner.addresses[0]
    return stub, runner, f"http://{addr[0]}:{addr[1]}"


class NetServerThread:
    """The stub on its own event loop in a background thread (for blocking tests and
    tools): ``with NetServerThread(cfg) as ns: ns.url ...``. Talk to it over HTTP."""

    def __init__(self, cfg: NetServerConfig | None = None):
        self.cfg = cfg
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="netserver-stub", daemon=True)
        self.url = ""
        self.stub: NetServerStub | None = None
        self._runner: web.AppRunner | None = None

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=30)

    def __enter__(self) -> NetServerThread:
        self.thread.start()
        self.stub, self._runner, self.url = self._run(start_netserver(self.cfg))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._runner is not None:
                self._run(self._runner.cleanup())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
            self.loop.close()
