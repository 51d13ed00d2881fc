"""Downlinks to v2 devices through their network server (``docs/repair.md``).

- :func:`route_from_headers`: the route an uplink's request brings. The Things
  Stack's webhook carries the push URLs and the downlink key in ``X-Downlink-Push``,
  ``X-Downlink-Replace`` and ``X-Downlink-Apikey``; ChirpStack's device queue and
  the collector's own downlink URL come from the settings.
- :class:`NetworkServers`: one aiohttp client session that hands a downlink to the
  network server of its route, in that server's shape, and says what came of it.
- :class:`DownlinkAgent`: takes the due rows of the durable outbox
  (:mod:`collector.service.outbox`), hands them over, records each outcome and
  retries with backoff (``downlink_backoff_base`` doubling up to
  ``downlink_backoff_cap``) until ``downlink_expiry``.

The downlink key and the API tokens are secrets: they go in request headers only,
never in a log line or an API answer.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import aiohttp

from collector.core.uplink import Uplink
from collector.core.wire2 import FPORT_V2
from collector.service import outbox
from collector.service.clock import Clock, wait_first
from collector.service.config import ServiceConfig

log = logging.getLogger("collector.downlinks")

#: longest URL or key taken from a webhook's headers
MAX_HEADER_VALUE = 2048


def route_from_headers(integration: str, headers: Mapping[str, str]) -> dict | None:
    """The downlink route of an uplink that arrived on ``integration`` with these
    request headers (None: it brings none)."""
    if integration == "ttn":
        push = headers.get("X-Downlink-Push") or ""
        replace = headers.get("X-Downlink-Replace") or ""
        key = headers.get("X-Downlink-Apikey") or ""
        if not key or not (push or replace):
            return None
        if any(len(v) > MAX_HEADER_VALUE for v in (push, replace, key)) or not all(
                v.startswith(("http://", "https://")) for v in (push, replace) if v):
            log.warning("event=downlink_route_ignored integration=ttn reason=%r",
                        "X-Downlink-Push/Replace are not http(s) URLs of at most 2048 characters")
            return None
        return {"kind": "tts", "push": push or None, "replace": replace or None, "key": key}
    if integration == "chirpstack":
        return {"kind": "chirpstack"}
    return {"kind": "generic"}


def downlink_route(up: Uplink, integration: str, request: Any) -> dict | None:
    """The downlink route of a v2 uplink's request (None for every other uplink)."""
    if up.fport != FPORT_V2:
        return None
    return route_from_headers(integration, request.headers)


def unavailable(cfg: ServiceConfig, route: dict | None, integration: str | None = None) -> str | None:
    """Why downlinks cannot reach a device with this route (None: they can)."""
    if route is None:
        if integration == "ttn":
            return ("the webhook carries no downlink key (X-Downlink-Apikey with X-Downlink-Push): "
                    "set a downlink API key on the The Things Stack webhook")
        return "no uplink with a downlink route yet"
    kind = route.get("kind")
    if kind == "chirpstack" and not cfg.chirpstack_api_url:
        return "chirpstack_api_url is not set"
    if kind == "generic" and not cfg.downlink_url:
        return "downlink_url is not set"
    if kind == "mqtt" and not cfg.mqtt_url:
        return "mqtt_url is not set (the route came over MQTT)"
    return None


@dataclass(frozen=True)
class Outcome:
    #: ``sent`` (the network server took it), ``failed`` (retry: network, 5xx, 429),
    #: ``rejected`` (4xx: a setting or key is wrong; retried, with the reason logged)
    outcome: str
    status: int | None
    detail: str | None = None


class NetworkServers:
    """Hands downlinks to The Things Stack, ChirpStack or the collector's own URL."""

    def __init__(self, cfg: ServiceConfig):
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None
        #: the MQTT subscriber (:class:`collector.service.mqtt.MqttIngest`) while it runs:
        #: it publishes the downlinks of routes of kind ``mqtt``
        self.mqtt: Any = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.cfg.downlink_timeout))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def requests(self, dev_eui: str, route: dict, payload: bytes, replace: bool) -> list[tuple[str, str, dict, Any]]:
        """The HTTP requests (method, URL, headers, JSON body) that hand ``payload`` over."""
        data = base64.b64encode(payload).decode()
        cfg = self.cfg
        kind = route.get("kind")
        if kind == "tts":
            url = route.get("replace") if replace and route.get("replace") else (route.get("push") or route["replace"])
            return [("POST", url, {"Authorization": f"Bearer {route['key']}"},
                     {"downlinks": [{"f_port": FPORT_V2, "frm_payload": data, "priority": "NORMAL"}]})]
        if kind == "chirpstack":
            url = f"{cfg.chirpstack_api_url.rstrip('/')}/api/devices/{quote(dev_eui.lower())}/queue"
            auth = {cfg.chirpstack_auth_header: f"Bearer {cfg.chirpstack_api_token}"}
            body = {"queueItem": {"confirmed": False, "fPort": FPORT_V2, "data": data}}
            # replace: flush the device's queue (the downlink it holds is carried again in this one)
            return [*([("DELETE", url, auth, None)] if replace else []), ("POST", url, auth, body)]
        headers = {"Authorization": f"Bearer {cfg.downlink_token}"} if cfg.downlink_token else {}
        return [("POST", cfg.downlink_url, headers,
                 {"devEui": dev_eui, "fPort": FPORT_V2, "payload": data, "replace": replace})]

    async def send(self, dev_eui: str, route: dict, payload: bytes, replace: bool) -> Outcome:
        if route.get("kind") == "mqtt":
            if self.mqtt is None:
                return Outcome("failed", None, "the MQTT subscriber is not running (mqtt_url)")
            detail = await self.mqtt.send_downlink(dev_eui, FPORT_V2, payload, replace, route=route)
            return Outcome("sent" if detail is None else "failed", None, detail)
        assert self._session is not None
        status = None
        try:
            for method, url, headers, body in self.requests(dev_eui, route, payload, replace):
                async with self._session.request(method, url, headers=headers, json=body) as resp:
                    status = resp.status
                    text = (await resp.content.read(300)).decode("utf-8", "replace")
                    if not 200 <= status < 300:
                        retry = status >= 500 or status in (408, 429)
                        return Outcome("failed" if retry else "rejected", status,
                                       f"{method} {_public(url)} answered {status}: {text[:200]}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as e:
            return Outcome("failed", status, f"{type(e).__name__}: {e}"[:300])
        return Outcome("sent", status)


def _public(url: str) -> str:
    """A URL as a log line may show it (no query string: some servers put keys there)."""
    return url.split("?", 1)[0]


class DownlinkAgent:
    """Hands the outbox's due downlinks to the network servers, with retries.

    ``hub`` is the :class:`collector.service.repairs.RepairHub` (routes and the
    devices' in-memory repair state); ``committer`` the store's group committer.
    """

    def __init__(self, cfg: ServiceConfig, store: Any, committer: Any, clock: Clock, hub: Any):
        self.cfg = cfg
        self.store = store
        self.committer = committer
        self.clock = clock
        self.hub = hub
        self.servers = NetworkServers(cfg)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    async def start(self) -> None:
        await self.servers.start()
        self._task = asyncio.get_running_loop().create_task(self._loop(), name="downlinks")

    def wake(self) -> None:
        self._wake.set()

    async def stop(self) -> None:
        self._stopping = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.servers.close()

    async def _loop(self) -> None:
        while not self._stopping:
            self._wake.clear()
            try:
                await self.run_due()
                nxt = await asyncio.to_thread(outbox.next_due, self.store.query)
            except Exception:  # noqa: BLE001 - the agent must keep running
                log.exception("event=downlink_agent_error")
                nxt = None
                await asyncio.sleep(1.0)
            waiters = [self._wake.wait()]
            if nxt is not None:
                waiters.append(self.clock.sleep_until(nxt))
            await wait_first(waiters, timeout=None if nxt is not None else 30.0)

    def backoff(self, attempts: int) -> float:
        return min(self.cfg.downlink_backoff_cap, self.cfg.downlink_backoff_base * 2 ** max(0, attempts))

    async def run_due(self) -> int:
        """Hand over every downlink due now; returns how many were tried."""
        now = self.clock.now()
        rows = await asyncio.to_thread(outbox.due, self.store.query, now)
        if rows:
            await asyncio.gather(*(self._one(r) for r in rows))
        return len(rows)

    async def _one(self, row: dict) -> None:
        dev, payload = row["dev_eui"], row["payload"]
        route = self.hub.routes.get(dev)
        reason = unavailable(self.cfg, route)
        now = self.clock.now()
        if reason is None:
            assert route is not None
            res = await self.servers.send(dev, route, payload, row["replaces"])
        else:
            res = Outcome("failed", None, f"repair unavailable: {reason}")
        now = self.clock.now()
        state = None
        nxt: float | None = now + self.backoff(row["attempts"])
        outcome = res.outcome
        if outcome == "sent":
            state = self.hub.handed_over(dev, payload)
            nxt = None
        elif now - row["created"] >= self.cfg.downlink_expiry:
            outcome, nxt = "expired", None
        try:
            current = await self.committer.submit(outbox.op_attempt(dev, payload, row["commands"], outcome,
                                                                    res.detail, now, nxt, state))
        except Exception as e:  # noqa: BLE001 - the store is down: the row stays pending
            log.error("event=downlink_not_recorded dev=%s outcome=%s error=%r", dev, outcome, str(e))
            return
        if current or outcome != "expired":
            self.hub.attempted(dev, outcome)
        level = logging.INFO if outcome == "sent" else logging.WARNING
        log.log(level, "event=downlink dev=%s outcome=%s status=%s commands=%r attempts=%d%s", dev, outcome,
                res.status, " ".join(row["commands"]), row["attempts"] + 1,
                f" detail={res.detail!r}" if res.detail else "")
