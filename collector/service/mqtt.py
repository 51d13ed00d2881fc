"""Uplinks from a network server's MQTT integration (ChirpStack v4, The Things Stack).

:class:`MqttIngest` keeps one persistent MQTT session with the broker (clean start
off, a session expiry, QoS 1 subscriptions) and hands every uplink to the same
:class:`~collector.service.ingest_http.Ingest` the webhooks use. The PUBACK of a
message goes out only after its uplink is committed (manual acknowledgement), and
in the order the messages arrived (MQTT requires it): a collector that dies before
the commit gets the message again from the broker when it reconnects. A commit that
fails is not acknowledged; the session is taken down and resumed, so the broker
sends it again.

The client is paho-mqtt (>= 2: ``manual_ack``, ``ack(mid, qos)``) running its
network loop in its own thread, which also reconnects with backoff (1 s doubling to
30 s). Its callbacks only hand over to the event loop (``call_soon_threadsafe``);
everything else happens there. An acknowledgement is sent only on the connection
the message came in on: after a reconnect the broker sends the unacknowledged ones
again, and they are recognised as duplicates.

Outcomes are counted in ``collector_mqtt_messages{outcome}``: ``accepted``,
``duplicate``, ``ignored`` (another port, a join, ...), ``event_ignored`` (a
ChirpStack event other than ``up``), ``rejected`` (a bad payload or topic: logged,
acknowledged, never retried), ``other_partition``, ``unavailable`` (the store
could not take it: not acknowledged).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import orjson
import paho.mqtt.client as paho
from aiohttp import web
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions
from prometheus_client import Counter, Gauge

from collector.core import ingest as parsers
from collector.core import webhook
from collector.core.mqtt import TopicError, downlink, parse_topic
from collector.core.wire2 import FPORT_V2
from collector.service.gate import Answer
from collector.service.ingest_http import INGEST, Ingest, Pending
from collector.service.keys import CFG, METRICS
from collector.service.metrics import Metrics
from collector.service.mqtt_config import MqttSettings, mqtt_settings
from collector.service.repairs import REPAIR

log = logging.getLogger("collector.mqtt")

#: seconds before a session whose commit failed is resumed (the broker then sends
#: the unacknowledged messages again)
RESUME_DELAY = 5.0
RECONNECT_MIN, RECONNECT_MAX = 1, 30


@dataclasses.dataclass(slots=True)
class _Received:
    """A message in arrival order, waiting for its turn to be acknowledged."""
    generation: int
    mid: int
    qos: int
    done: bool = False


class MqttIngest:
    def __init__(self, settings: MqttSettings, ingest: Ingest, metrics: Metrics, body_limit: int,
                 default_region: str):
        self.s = settings
        self.ingest = ingest
        self.body_limit = body_limit
        self.default_region = default_region
        self.label = f"mqtt_{settings.integration}"
        r = metrics.registry
        self._messages = Counter("collector_mqtt_messages", "MQTT messages received, by outcome", ["outcome"],
                                 registry=r)
        self._outcomes: dict[str, Any] = {}
        self._reconnects = Counter("collector_mqtt_reconnects", "Connections to the broker after the first",
                                   registry=r)
        self._connected_gauge = Gauge("collector_mqtt_connected", "1 while connected to the broker", registry=r)
        self.connected = False
        self.connects = 0
        #: messages received since the start
        self.received = 0
        self.last_error: str | None = None
        self.session_present: bool | None = None
        self._generation = 0
        self._order: deque[_Received] = deque()
        self._pending: set[asyncio.Future] = set()
        self._stopping = False
        self.resume_delay = RESUME_DELAY
        self._resuming: asyncio.Task | None = None
        #: the (application, device) of each DevEUI's latest uplink: where its downlinks go
        self.routes: dict[str, tuple[str, str]] = {}
        self._published: dict[int, asyncio.Future] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self.client: paho.Client | None = None

    # ------------------------------------------------------------------ client (paho thread)

    def _new_client(self) -> paho.Client:
        s = self.s
        v5 = s.protocol == "5"
        c = paho.Client(CallbackAPIVersion.VERSION2, client_id=s.client_id,
                        protocol=paho.MQTTv5 if v5 else paho.MQTTv311,
                        clean_session=None if v5 else False, manual_ack=True)
        if s.username is not None:
            c.username_pw_set(s.username, s.password)
        if s.tls:
            c.tls_set(ca_certs=s.ca_file)
        c.reconnect_delay_set(RECONNECT_MIN, RECONNECT_MAX)
        loop = self._loop
        assert loop is not None

        def on_connect(client, userdata, flags, reason, properties):
            if not reason.is_failure:
                # A new connection: from now on no message of an older one is acknowledged
                # (bumped here, in the network thread, before any message of this one).
                self._generation += 1
                qos1 = SubscribeOptions(qos=1) if v5 else 1
                client.subscribe([(f, qos1) for f in s.filters])
            loop.call_soon_threadsafe(self._on_connect, str(reason), reason.is_failure, flags.session_present)

        def on_subscribe(client, userdata, mid, reasons, properties):
            loop.call_soon_threadsafe(self._on_subscribe, [(r.value, str(r)) for r in reasons])

        def on_disconnect(client, userdata, flags, reason, properties):
            loop.call_soon_threadsafe(self._on_disconnect, str(reason))

        def on_message(client, userdata, msg):
            loop.call_soon_threadsafe(self._on_message, msg, self._generation)

        def on_connect_fail(client, userdata):
            loop.call_soon_threadsafe(self._on_connect_fail)

        def on_publish(client, userdata, mid, reason, properties):
            loop.call_soon_threadsafe(self._on_publish, mid, str(reason), reason.is_failure)

        c.on_connect, c.on_subscribe, c.on_disconnect, c.on_message, c.on_publish, c.on_connect_fail = (
            on_connect, on_subscribe, on_disconnect, on_message, on_publish, on_connect_fail)
        props = None
        if v5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = s.session_expiry
            props.ReceiveMaximum = s.inflight
        c.connect_async(s.host, s.port, s.keepalive, clean_start=False if v5 else paho.MQTT_CLEAN_START_FIRST_ONLY,
                        properties=props)
        return c

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self.client = self._new_client()
        self.client.loop_start()
        log.info("event=mqtt_starting broker=%s integration=%s filters=%s client_id=%s partition=%d/%d",
                 self.s.public_url, self.s.integration, ",".join(self.s.filters), self.s.client_id,
                 self.s.partition.index, self.s.partition.count)

    async def stop(self, timeout: float) -> None:
        """Stop taking messages, acknowledge what is committed, leave the session."""
        self._stopping = True
        if self._resuming is not None:
            self._resuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._resuming
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=timeout)
        self._ack_ready()
        client, self.client = self.client, None
        if client is not None:
            await asyncio.to_thread(_close, client)
        self.connected = False
        self._connected_gauge.set(0)
        log.info("event=mqtt_stopped")

    async def _resume(self) -> None:
        """Take the session down and resume it: the broker sends every message not
        yet acknowledged again."""
        await asyncio.sleep(self.resume_delay)
        client, self.client = self.client, None
        if client is not None:
            await asyncio.to_thread(_close, client)
        if self._stopping:
            return
        self._generation += 1  # nothing received on the old connection is acknowledged any more
        self.client = self._new_client()
        self.client.loop_start()
        self._resuming = None

    # ------------------------------------------------------------------ callbacks (event loop)

    def _on_connect(self, reason: str, failed: bool, session_present: bool) -> None:
        if failed:
            self.last_error = f"the broker refused the connection: {reason}"
            log.error("event=mqtt_refused broker=%s reason=%r", self.s.public_url, reason)
            return
        # what came on older connections is sent again by the broker: not acknowledged
        self._order = deque(r for r in self._order if r.generation == self._generation)
        self.connects += 1
        if self.connects > 1:
            self._reconnects.inc()
        self.connected = True
        self.session_present = session_present
        self.last_error = None
        self._connected_gauge.set(1)
        log.info("event=mqtt_connected broker=%s session_present=%s connects=%d", self.s.public_url,
                 session_present, self.connects)
        if self.connects > 1 and not session_present:
            log.warning("event=mqtt_session_lost broker=%s detail=%r", self.s.public_url,
                        "the broker kept no session: uplinks published while the collector was away are lost "
                        "(broker restarted without persistence, or the session expired)")

    def _on_connect_fail(self) -> None:
        if self.last_error is None or self.connected:  # once per outage, not at every retry
            log.warning("event=mqtt_cannot_connect broker=%s detail=%r", self.s.public_url,
                        "network or TLS failure; retrying with backoff")
        self.connected = False
        self._connected_gauge.set(0)
        self.last_error = "cannot connect (network or TLS failure); retrying"

    def _on_subscribe(self, reasons: list[tuple[int, str]]) -> None:
        for (code, text), f in zip(reasons, self.s.filters, strict=False):
            if code >= 0x80:
                self.last_error = f"subscription to {f!r} refused: {text}"
                log.error("event=mqtt_subscribe_refused filter=%r reason=%r", f, text)
            elif code == 0:
                log.warning("event=mqtt_qos0 filter=%r detail=%r", f, "the broker granted QoS 0: an uplink in "
                            "flight when the collector stops is lost")

    def _on_disconnect(self, reason: str) -> None:
        if self.connected and not self._stopping:
            log.warning("event=mqtt_disconnected broker=%s reason=%r", self.s.public_url, reason)
            self.last_error = f"disconnected: {reason}"
        elif self.last_error is None and not self._stopping:  # (a refusal keeps its own reason)
            self.last_error = f"cannot connect: {reason}"
        self.connected = False
        self._connected_gauge.set(0)

    def _on_message(self, msg: paho.MQTTMessage, generation: int) -> None:
        if self._stopping:
            return  # not acknowledged: the broker sends it again to the next session
        self.received += 1
        r = _Received(generation, msg.mid, msg.qos)
        self._order.append(r)
        try:
            outcome = self._handle(msg, r)
        except Exception:  # noqa: BLE001 - one message must never stop the subscriber
            log.exception("event=mqtt_error topic=%r", msg.topic)
            outcome = "rejected"
        if outcome is not None:
            self._count(outcome)
            r.done = True
            self._ack_ready()

    def _handle(self, msg: paho.MQTTMessage, r: _Received) -> str | None:
        """The outcome of a message decided at once, or None while its commit runs."""
        s = self.s
        try:
            t = parse_topic(s.integration, msg.topic)
        except TopicError as e:
            return self._rejected(msg.topic, str(e))
        if t.event != "up":
            return "event_ignored"
        if not s.partition.owns(t.device):
            return "other_partition"
        if len(msg.payload) > self.body_limit:
            return self._rejected(msg.topic, f"the payload is {len(msg.payload)} bytes; the limit is "
                                             f"{self.body_limit}")
        try:
            # the webhook routes' one parse (the msgspec fast path for The Things Stack)
            up = webhook.parse_body(s.integration, msg.payload, None, self.default_region)
        except parsers.Ignored:
            self.ingest.uplink(self.label, "ignored")
            return "ignored"
        except parsers.IngestError as e:
            self.ingest.uplink(self.label, "rejected")
            return self._rejected(msg.topic, str(e))
        self.routes[up.dev_eui] = (t.application, t.device)
        # a v2 uplink's downlinks go back the way it came (the repair loop keeps the route)
        route = ({"kind": "mqtt", "integration": s.integration, "application": t.application,
                  "device": t.device} if up.fport == FPORT_V2 else None)
        entered = self.ingest.enter(up, self.label, route)
        if isinstance(entered, Answer):
            if entered.status >= 500:  # the store refuses uplinks for now: not acknowledged
                self._not_taken()
                return None
            return "ignored" if entered.status == 202 else "rejected"
        fut = entered.future
        self._pending.add(fut)
        fut.add_done_callback(lambda f: self._settled(f, r, entered))
        return None

    def _settled(self, fut: asyncio.Future, r: _Received, p: Pending) -> None:
        self._pending.discard(fut)
        ans = self.ingest.settle(p)
        if ans.status == 202:
            self._count(p.status)
            r.done = True
            self._ack_ready()
            return
        self._not_taken()

    def _not_taken(self) -> None:
        """The store could not take an uplink: it stays unacknowledged, and the
        session is resumed (once) so that the broker sends it again."""
        self._count("unavailable")
        if self._resuming is None and not self._stopping:
            log.error("event=mqtt_not_acknowledged detail=%r resume_in=%g", "the store could not take an uplink; "
                      "the session is resumed so that the broker sends it again", self.resume_delay)
            self._resuming = asyncio.ensure_future(self._resume())

    def _ack_ready(self) -> None:
        """Acknowledge, in arrival order, the messages whose outcome is committed."""
        order, client = self._order, self.client
        while order and (order[0].done or order[0].generation != self._generation):
            r = order.popleft()
            if r.done and r.qos and r.generation == self._generation and client is not None:
                client.ack(r.mid, r.qos)

    def _rejected(self, topic: str, why: str) -> str:
        log.warning("event=mqtt_rejected integration=%s topic=%r error=%r", self.s.integration, topic, why)
        return "rejected"

    def _count(self, outcome: str) -> None:
        c = self._outcomes.get(outcome)
        if c is None:
            c = self._outcomes[outcome] = self._messages.labels(outcome)
        c.inc()

    # ------------------------------------------------------------------ downlinks

    async def send_downlink(self, dev_eui: str, fport: int, payload: bytes, replace: bool = False,
                            timeout: float = 10.0, route: dict | None = None) -> str | None:
        """Publish a downlink to the device through the network server's MQTT
        integration, at QoS 1; None once the broker has acknowledged it, otherwise
        why it was not handed over (retry later). ``route``: an ``mqtt`` route of the
        repair loop (default: the topic of the device's latest uplink here)."""
        if route is not None:
            where = (route.get("integration") or self.s.integration, route["application"], route["device"])
        elif dev_eui.upper() in self.routes:
            where = (self.s.integration, *self.routes[dev_eui.upper()])
        else:
            return "no uplink from this device has come over MQTT yet"
        client = self.client
        if client is None or not self.connected:
            return "not connected to the MQTT broker"
        topic, body = downlink(where[0], where[1], where[2], dev_eui, fport, payload, replace)
        info = client.publish(topic, orjson.dumps(body), qos=1)
        if info.rc != paho.MQTT_ERR_SUCCESS:
            return f"publishing to {topic!r} failed: {paho.error_string(info.rc)}"
        fut = self._published[info.mid] = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                return await fut
        except TimeoutError:
            return f"the broker did not acknowledge the downlink within {timeout:g} s"
        finally:
            self._published.pop(info.mid, None)

    def _on_publish(self, mid: int, reason: str, failed: bool) -> None:
        fut = self._published.get(mid)
        if fut is not None and not fut.done():
            fut.set_result(f"the broker refused the downlink: {reason}" if failed else None)

    # ------------------------------------------------------------------ status

    def health(self) -> dict:
        return {"broker": self.s.public_url, "connected": self.connected, "sessionPresent": self.session_present,
                "reconnects": max(0, self.connects - 1), "received": self.received,
                "unacknowledged": len(self._order),
                "filters": list(self.s.filters), "error": self.last_error}


def _close(client: paho.Client) -> None:
    """Leave the session (it stays on the broker) and stop the network thread."""
    client.disconnect()
    client.loop_stop()


MQTT = web.AppKey("mqtt", MqttIngest)


async def mqtt_ctx(app: web.Application) -> AsyncIterator[None]:
    """The MQTT ingest as a part of the service: started after the ingest path and
    stopped before it (the commits of the messages in flight finish and are
    acknowledged first)."""
    cfg = app[CFG]
    sub = app[MQTT] = MqttIngest(mqtt_settings(cfg), app[INGEST], app[METRICS], cfg.body_limit,
                                 cfg.default_region)
    hub = app.get(REPAIR)
    servers = hub.agent.servers if hub is not None and hub.agent is not None else None
    await sub.start()
    if servers is not None:
        servers.mqtt = sub  # the repair loop's downlinks of MQTT routes
    try:
        yield
    finally:
        if servers is not None:
            servers.mqtt = None
        await sub.stop(cfg.shutdown_timeout)
