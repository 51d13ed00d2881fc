"""The uplink as the collector sees it, whichever network server delivered it."""

from __future__ import annotations

import base64
from binascii import b2a_base64
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Uplink:
    #: LoRaWAN DevEUI, 16 upper-case hex digits
    dev_eui: str
    fport: int
    payload: bytes
    #: network-server receive time, Unix milliseconds (``None`` until the collector
    #: fills in its own time, for a body that carries none)
    received_ms: int | None
    fcnt: int | None = None
    #: e.g. "SF9BW125" (None when the network server did not say)
    data_rate: str | None = None
    #: "EU868", "US915", ... when known
    region: str | None = None
    frequency_hz: int | None = None
    gateway: str | None = None
    rssi: float | None = None
    snr: float | None = None
    #: which integration delivered it: "ttn", "chirpstack", "generic"
    source: str = "generic"
    #: the network server's receive time as it sent it, when the collector could not
    #: take it (:func:`collector.core.timefmt.receive_ms`) and used its own instead
    ns_time: str | None = None

    def to_dict(self) -> dict:
        # written out (not a comprehension over __slots__): it runs for every uplink
        # on ingest and again for every fragment of a message that is assembled, and
        # the comprehension's getattr calls cost twice as much
        d = {"dev_eui": self.dev_eui, "fport": self.fport, "payload": b2a_base64(self.payload, newline=False).decode(),
             "received_ms": self.received_ms, "fcnt": self.fcnt, "data_rate": self.data_rate, "region": self.region,
             "frequency_hz": self.frequency_hz, "gateway": self.gateway, "rssi": self.rssi, "snr": self.snr,
             "source": self.source}
        if self.ns_time is not None:  # the usual case leaves it out: stored rows stay as they were
            d["ns_time"] = self.ns_time
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Uplink:
        d = dict(d)
        d["payload"] = base64.b64decode(d["payload"])
        return cls(**d)
