"""The uplink as the collector sees it, whichever network server delivered it."""

from __future__ import annotations

import base64
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
        d = {f: getattr(self, f) for f in self.__slots__}
        d["payload"] = base64.b64encode(self.payload).decode()
        if d["ns_time"] is None:
            del d["ns_time"]  # the usual case: stored rows stay as they were
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Uplink:
        d = dict(d)
        d["payload"] = base64.b64decode(d["payload"])
        return cls(**d)
