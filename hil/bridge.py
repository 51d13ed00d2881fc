"""Forward what an emulated module transmits to a collector, in a network server's
JSON format (ttn | chirpstack | generic, see devicesim.formats).

Every transmitted frame goes through the simulator's network-server model
(:class:`devicesim.network.NetworkServer`), so the frame-counter check, the
deduplication and (when configured) latency, jitter and duplicate deliveries apply
as in the field. By default the model is ideal: zero latency, no loss, one gateway
``bench-gw``. :func:`frame_to_uplink` is that ideal conversion for one frame;
:class:`Forwarder` runs the model and POSTs in its own thread so the emulator never
waits on HTTP.
"""

from __future__ import annotations

import dataclasses
import heapq
import itertools
import logging
import random
import threading
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass

from collector.testing.http import http
from devicesim import network
from devicesim.config import Latency, NetworkConfig
from devicesim.formats import FORMATS, AppUplink, GatewayRx, uplink_body
from hil.emulator.core import TxFrame

log = logging.getLogger("hil.bridge")

GATEWAY_ID = "bench-gw"
#: link quality the bench gateway reports
RSSI = -60.0
SNR = 9.5


def ns_frame(frame: TxFrame, session: int = 0) -> network.Frame:
    """The network-server model's view of an emulated transmission."""
    return network.Frame(
        dev_eui=frame.dev_eui.upper(), fcnt=frame.fcnt, payload=frame.payload, end_time=frame.time_ns / 1e9,
        dr=frame.dr, region=frame.region, frequency_hz=frame.frequency_hz, fport=frame.fport, session=session,
        airtime_s=frame.airtime_s, tag=frame.seq,
    )


def _bench_gateway(up: AppUplink) -> AppUplink:
    """The model names its gateways ``gw-NN``; the bench has one, ``bench-gw``."""
    gws = tuple(GatewayRx(GATEWAY_ID, g.rssi, g.snr, g.time_ms, g.gateway_eui, g.channel_index) for g in up.gateways)
    return dataclasses.replace(up, gateways=gws)


def network_config(*, latency_s: float = 0.0, jitter_s: float = 0.0, duplicate_p: float = 0.0,
                   dedup_window_s: float = 0.0) -> NetworkConfig:
    """An ideal network server (no backhaul delay, no outages) with the given delivery
    latency (base plus exponential jitter of mean ``jitter_s``) and duplicate rate."""
    return NetworkConfig(dedup_window_s=dedup_window_s, backhaul=Latency(0.0, 0.0),
                         delivery=Latency(latency_s, jitter_s), duplicate_p=duplicate_p)


def frame_to_uplink(frame: TxFrame, *, rssi: float = RSSI, snr: float = SNR, session: int = 0) -> AppUplink:
    """What an ideal network server hands the application for ``frame``."""
    (d,) = network.NetworkServer.ideal().uplink(ns_frame(frame, session), [network.Reception(0, rssi, snr)])
    return _bench_gateway(d.uplink)


@dataclass(frozen=True)
class Delivery:
    path: str
    body: dict
    status: int | None
    #: the reply body, or the error
    reply: str


def post_json(url: str, body: dict, *, token: str | None = None, timeout: float = 10.0,
              headers: dict[str, str] | None = None) -> tuple[int | None, str]:
    """POST ``body``; ``(HTTP status, reply text)``, status None when unreachable."""
    try:
        r = http("POST", url, body, headers, timeout=timeout, token=token, compact=True)
    except OSError as e:
        return None, str(e)
    return r.status, r.text


def deliver(base_url: str, fmt: str, up: AppUplink, *, token: str | None = None,
            headers: dict[str, str] | None = None) -> Delivery:
    """Build the body a network server would POST for ``up`` and POST it (with
    ``headers`` besides the token, e.g. a TTS webhook's ``X-Downlink-*``)."""
    path, body = uplink_body(fmt, up)
    status, reply = post_json(base_url.rstrip("/") + path, body, token=token, headers=headers)
    level = logging.INFO if status is not None and 200 <= status < 300 else logging.WARNING
    log.log(level, "event=forward path=%s deveui=%s fcnt=%d status=%s reply=%r",
            path, up.dev_eui, up.fcnt, status, reply[:200])
    return Delivery(path, body, status, reply)


class Forwarder:
    """Hook for an emulator: ``Forwarder(url).submit`` as ``on_tx``.

    Frames go through ``network`` (default: an ideal :class:`NetworkServer`); each
    delivery is POSTed when the wall clock reaches its delivery time. A frame whose
    counter is back at 0 starts a new session, as after the join that reset it (an
    emulated module resets its counter only when it joins), so a re-join is not
    taken for a replay; any other repeated or lower counter is dropped.

    ``channels``: the frequencies the bench gateway listens on (US915: one
    sub-band); a frame on another channel is not heard. ``loss``: the probability that the bench gateway does not hear a frame, drawn
    from the forwarder's own stream seeded by ``loss_seed``. ``headers(dev_eui)``:
    extra request headers per device (a TTS webhook's downlink route).
    """

    def __init__(self, base_url: str, fmt: str = "generic", *, token: str | None = None,
                 network_server: network.NetworkServer | None = None, clock: Callable[[], float] = time.time,
                 poll_s: float = 0.05, loss: float = 0.0, loss_seed: int = 0,
                 headers: Callable[[str], dict[str, str]] | None = None,
                 channels: Collection[int] | None = None):
        if not 0.0 <= loss <= 1.0:
            raise ValueError(f"loss {loss} outside 0..1")
        self.loss = loss
        self._loss_rng = random.Random(loss_seed)
        self.lost = 0
        self.headers = headers
        #: frequencies (Hz) the bench gateway listens on; None: all
        self.channels = set(channels) if channels is not None else None
        self.unheard = 0
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        self.base_url = base_url
        self.fmt = fmt
        self.token = token
        self.ns = network_server or network.NetworkServer.ideal()
        self.clock = clock
        self.poll_s = poll_s
        self.deliveries: list[Delivery] = []
        self._sessions: dict[str, tuple[int, int]] = {}
        self._incoming: list[TxFrame] = []
        self._due: list[tuple[float, int, network.Delivery]] = []
        self._order = itertools.count()
        self._posting = 0
        self._closing = False
        self._cv = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()

    def submit(self, frame: TxFrame) -> None:
        with self._cv:
            self._incoming.append(frame)
            self._cv.notify_all()

    def _session(self, frame: TxFrame) -> int:
        eui = frame.dev_eui.upper()
        session, last = self._sessions.get(eui, (0, -1))
        if frame.fcnt == 0 and last >= 0:
            session, last = session + 1, 0
        self._sessions[eui] = (session, max(last, frame.fcnt))
        return session

    def _ns_pending(self) -> int:
        s = self.ns.stats
        return s.frames - s.unheard - s.accepted - s.dropped_fcnt

    def _idle(self) -> bool:
        return not (self._incoming or self._due or self._posting or self._ns_pending())

    def _next(self) -> network.Delivery | None:
        """Under the lock: the next delivery to POST, waiting until one is due; None
        when closing and nothing is left."""
        while True:
            now = self.clock()
            for f in self._incoming:
                session = self._session(f)
                if self.channels is not None and f.frequency_hz not in self.channels:
                    self.unheard += 1
                    log.warning("event=uplink_not_heard deveui=%s fcnt=%d freq=%d reason=%r", f.dev_eui, f.fcnt,
                                f.frequency_hz, "the gateway does not listen on this channel (US915 sub-band?)")
                    continue
                if self.loss and self._loss_rng.random() < self.loss:
                    self.lost += 1
                    log.info("event=uplink_lost deveui=%s fcnt=%d", f.dev_eui, f.fcnt)
                    continue
                self.ns.submit(ns_frame(f, session), [network.Reception(0, RSSI, SNR)])
            self._incoming.clear()
            for d in self.ns.pop_due(now):
                heapq.heappush(self._due, (d.time, next(self._order), d))
            if self._due and self._due[0][0] <= now:
                self._posting += 1
                return heapq.heappop(self._due)[2]
            if self._closing:
                return None
            self._cv.notify_all()  # drain() waiters
            timeout = None
            if self._due:
                timeout = self._due[0][0] - now
            if self._ns_pending():
                timeout = self.poll_s if timeout is None else min(timeout, self.poll_s)
            self._cv.wait(timeout)

    def _run(self) -> None:
        while True:
            with self._cv:
                d = self._next()
            if d is None:
                return
            try:
                extra = self.headers(d.uplink.dev_eui) if self.headers else None
                self.deliveries.append(deliver(self.base_url, self.fmt, _bench_gateway(d.uplink), token=self.token,
                                               headers=extra))
            except Exception:  # noqa: BLE001 - keep forwarding whatever one frame does
                log.exception("event=forward_failed")
            finally:
                with self._cv:
                    self._posting -= 1
                    self._cv.notify_all()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted frame was delivered (or dropped by the network
        server); False on timeout."""
        with self._cv:
            return self._cv.wait_for(self._idle, timeout)

    def close(self, timeout: float = 10.0) -> None:
        if not self.drain(timeout):
            log.warning("event=forwarder_closed_undelivered pending=%d", len(self._due) + self._ns_pending())
        with self._cv:
            self._closing = True
            self._due.clear()
            self._incoming.clear()
            self._cv.notify_all()
        self._thread.join(timeout)
