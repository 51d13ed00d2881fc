"""Forward what an emulated module transmits to a collector, in a network server's
JSON format (ttn | chirpstack | generic, see devicesim.formats).

:func:`frame_to_uplink` is the one place a transmitted frame becomes what a network
server hands the application (zero latency, one gateway ``bench-gw``); a network
server model can take its place later. :class:`Forwarder` POSTs in its own thread
so the emulator never waits on HTTP.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass

from collector import lorawan
from devicesim.formats import FORMATS, AppUplink, GatewayRx, uplink_body
from hil.emulator.core import TxFrame

log = logging.getLogger("hil.bridge")

GATEWAY_ID = "bench-gw"


def frame_to_uplink(frame: TxFrame, *, rssi: float = -60.0, snr: float = 9.5) -> AppUplink:
    d = lorawan.region(frame.region).dr(frame.dr)
    return AppUplink(
        dev_eui=frame.dev_eui,
        fport=frame.fport,
        fcnt=frame.fcnt,
        payload=frame.payload,
        received_ns=frame.time_ns,
        region=frame.region,
        dr=frame.dr,
        sf=d.sf,
        bw_hz=d.bw_hz,
        frequency_hz=frame.frequency_hz,
        gateways=(GatewayRx(GATEWAY_ID, rssi, snr, frame.time_ns // 1_000_000),),
        uid=frame.seq,
        airtime_s=frame.airtime_s,
    )


@dataclass(frozen=True)
class Delivery:
    path: str
    body: dict
    status: int | None
    #: the reply body, or the error
    reply: str


def post_json(url: str, body: dict, *, token: str | None = None, timeout: float = 10.0) -> tuple[int | None, str]:
    """POST ``body``; ``(HTTP status, reply text)``, status None when unreachable."""
    data = json.dumps(body, separators=(",", ":")).encode()
    req = urllib.request.Request(url, data=data, method="POST", headers={"Content-Type": "application/json"})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode("utf-8", errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as e:
        return None, str(e)


def deliver(base_url: str, fmt: str, up: AppUplink, *, token: str | None = None) -> Delivery:
    """Build the body a network server would POST for ``up`` and POST it."""
    path, body = uplink_body(fmt, up)
    status, reply = post_json(base_url.rstrip("/") + path, body, token=token)
    level = logging.INFO if status is not None and 200 <= status < 300 else logging.WARNING
    log.log(level, "event=forward path=%s deveui=%s fcnt=%d status=%s reply=%r",
            path, up.dev_eui, up.fcnt, status, reply[:200])
    return Delivery(path, body, status, reply)


class Forwarder:
    """Hook for an emulator: ``Forwarder(url).submit`` as ``on_tx``."""

    def __init__(self, base_url: str, fmt: str = "generic", *, token: str | None = None):
        if fmt not in FORMATS:
            raise ValueError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}")
        self.base_url = base_url
        self.fmt = fmt
        self.token = token
        self.deliveries: list[Delivery] = []
        self._q: queue.Queue[TxFrame | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="forwarder", daemon=True)
        self._thread.start()

    def submit(self, frame: TxFrame) -> None:
        self._q.put(frame)

    def _run(self) -> None:
        while (frame := self._q.get()) is not None:
            try:
                self.deliveries.append(deliver(self.base_url, self.fmt, frame_to_uplink(frame), token=self.token))
            except Exception:  # noqa: BLE001 - keep forwarding whatever one frame does
                log.exception("event=forward_failed")
            finally:
                self._q.task_done()

    def drain(self, timeout: float = 10.0) -> bool:
        """Wait until every submitted frame was posted; False on timeout."""
        done = threading.Event()
        threading.Thread(target=lambda: (self._q.join(), done.set()), daemon=True).start()
        return done.wait(timeout)

    def close(self, timeout: float = 10.0) -> None:
        self.drain(timeout)
        self._q.put(None)
        self._thread.join(timeout)
