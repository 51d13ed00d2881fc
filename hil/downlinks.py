"""Downlinks for an emulated module: what the collector queued at a network server
reaches the module's RX window.

:class:`DownlinkPuller` takes each downlink queued for the module's DevEUI at the
stand-in network server (``collector.testing.netserver_stub``: ``GET
{URL}/devices/{DEVEUI}/next`` pops it) and hands it to the emulated module, which
delivers it in the RX window after its next uplink (Class A: a downlink queued
after an uplink's RX windows waits for the next uplink). The module holds one
downlink at a time, the newest, as the network server does.

:func:`tts_headers` are the ``X-Downlink-*`` headers a The Things Stack webhook
carries, pointing at that network server, so the collector can push downlinks to
devices it hears through ``/uplink/ttn``.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable

log = logging.getLogger("hil.downlinks")

TTS_PATH = "/api/v3/as/applications/bench/webhooks/collector/devices/{dev}/down"


def tts_headers(ns_url: str, dev_eui: str, key: str) -> dict[str, str]:
    """The headers of a TTS webhook uplink of ``dev_eui`` whose downlinks go to ``ns_url``
    (the device id is the DevEUI in lower case)."""
    prefix = ns_url.rstrip("/") + TTS_PATH.format(dev=dev_eui.lower())
    return {"X-Downlink-Apikey": key, "X-Downlink-Push": prefix + "/push", "X-Downlink-Replace": prefix + "/replace"}


def pop_downlink(ns_url: str, dev_eui: str, timeout: float = 5.0) -> tuple[int, bytes] | None:
    """Pop the downlink queued for ``dev_eui``: ``(fPort, payload)``, None when none.
    Raises OSError / ValueError when the network server cannot be asked."""
    url = f"{ns_url.rstrip('/')}/devices/{urllib.parse.quote(dev_eui.upper())}/next"
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        if resp.status == 204:
            return None
        body = json.loads(resp.read())
    return int(body["fPort"]), bytes.fromhex(body["hex"])


class DownlinkPuller:
    """A thread that moves ``dev_eui``'s downlinks from the network server at
    ``ns_url`` to ``deliver(port, payload)`` (e.g. ``model.queue_downlink``),
    asking every ``poll_s`` seconds."""

    def __init__(self, ns_url: str, dev_eui: str, deliver: Callable[[int, bytes], None], *, poll_s: float = 0.1):
        self.ns_url = ns_url
        self.dev_eui = dev_eui.upper()
        self.deliver = deliver
        self.poll_s = poll_s
        self.pulled = 0
        self._stop = threading.Event()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name="downlink-puller", daemon=True)

    def start(self) -> DownlinkPuller:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                got = pop_downlink(self.ns_url, self.dev_eui)
            except (OSError, ValueError, KeyError) as e:
                if not self._failing:
                    log.warning("event=downlink_pull_failed url=%s error=%r", self.ns_url, str(e))
                self._failing = True
                got = None
            else:
                if self._failing:
                    log.info("event=downlink_pull_recovered url=%s", self.ns_url)
                self._failing = False
            if got is not None:
                self.pulled += 1
                log.info("event=downlink_queued deveui=%s fport=%d len=%d", self.dev_eui, got[0], len(got[1]))
                self.deliver(*got)
                continue
            self._stop.wait(self.poll_s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)
