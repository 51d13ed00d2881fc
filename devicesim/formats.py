"""The JSON bodies network servers POST to an application, for one uplink.

Shapes follow ``docs/spec/ingest-formats.md``: The Things Stack v3 webhooks,
ChirpStack v4 HTTP integration (JSON), and the collector's own format. Fields whose
value is a default (0, empty, false) are left out, as the real servers do.
Pure code: the caller supplies every time stamp and id.
"""

from __future__ import annotations

import base64
import functools
import uuid
from dataclasses import dataclass, field

from collector.core.timefmt import format_ms as _format_ms
from collector.core.timefmt import format_ns

#: every gateway copy of a frame carries the same receive time: format each once
format_ms = functools.lru_cache(maxsize=1024)(_format_ms)

FORMATS = ("ttn", "chirpstack", "generic")
PATHS = {"ttn": "/uplink/ttn", "chirpstack": "/uplink/chirpstack?event=up", "generic": "/uplink"}


@dataclass(frozen=True)
class GatewayRx:
    gateway_id: str
    rssi: float
    snr: float
    #: gateway receive time, Unix milliseconds
    time_ms: int
    gateway_eui: str = ""
    channel_index: int = 0


@dataclass(frozen=True)
class AppUplink:
    """One uplink as the network server hands it to the application."""

    dev_eui: str  # 16 hex digits (any case; each format writes its own case)
    fport: int
    fcnt: int
    payload: bytes
    #: network-server receive time, Unix nanoseconds
    received_ns: int
    region: str = "EU868"
    dr: int = 0
    sf: int = 12
    bw_hz: int = 125_000
    frequency_hz: int = 868_100_000
    gateways: tuple[GatewayRx, ...] = field(default_factory=tuple)
    device_id: str = ""
    application_id: str = "field-loggers"
    dev_addr: str = "260BE6BF"
    #: used to derive stable ids (correlation ids, deduplicationId) deterministically
    uid: int = 0
    airtime_s: float = 0.0

    @property
    def received_ms(self) -> int:
        return self.received_ns // 1_000_000


def _drop_defaults(d: dict) -> dict:
    return {k: v for k, v in d.items() if v not in (0, "", False, None, [], {})}


def ttn_body(up: AppUplink) -> dict:
    dev_eui = up.dev_eui.upper()
    rx = [
        _drop_defaults({
            "gateway_ids": {"gateway_id": g.gateway_id, **({"eui": g.gateway_eui} if g.gateway_eui else {})},
            "time": format_ms(g.time_ms),
            "rssi": g.rssi,
            "channel_rssi": g.rssi,
            "snr": g.snr,
            "channel_index": g.channel_index,
            "received_at": format_ms(g.time_ms),
        })
        for g in up.gateways
    ]
    uplink = _drop_defaults({
        "f_port": up.fport,
        "f_cnt": up.fcnt,
        "frm_payload": base64.b64encode(up.payload).decode(),
        "rx_metadata": rx,
        "settings": {
            "data_rate": {"lora": {"bandwidth": up.bw_hz, "spreading_factor": up.sf, "coding_rate": "4/5"}},
            "frequency": str(up.frequency_hz),
        },
        "received_at": format_ns(up.received_ns),
        "consumed_airtime": f"{up.airtime_s:.6f}s" if up.airtime_s else "",
    })
    ids = {
        "device_id": up.device_id or f"dev-{dev_eui.lower()}",
        "application_ids": {"application_id": up.application_id},
        "dev_eui": dev_eui,
        "dev_addr": up.dev_addr,
    }
    cid = uuid.UUID(int=(up.uid * 0x9E3779B97F4A7C15 + int(dev_eui, 16)) % (1 << 128))
    return {
        "end_device_ids": ids,
        "correlation_ids": [f"as:up:{cid.hex.upper()}"],
        "received_at": format_ns(up.received_ns + 15_000_000),
        "uplink_message": uplink,
    }


def chirpstack_body(up: AppUplink) -> dict:
    dev_eui = up.dev_eui.lower()
    dedup = uuid.UUID(int=(up.uid * 0xC2B2AE3D27D4EB4F + int(dev_eui, 16)) % (1 << 128))
    body = {
        "deduplicationId": str(dedup),
        "time": format_ns(up.received_ns).replace("Z", "+00:00"),
        "deviceInfo": {
            "tenantName": "ChirpStack",
            "applicationName": up.application_id,
            "deviceName": up.device_id or f"dev-{dev_eui}",
            "devEui": dev_eui,
        },
        "devAddr": up.dev_addr.lower(),
        "dr": up.dr,
        "fCnt": up.fcnt,
        "fPort": up.fport,
        "data": base64.b64encode(up.payload).decode(),
        "rxInfo": [
            _drop_defaults({
                "gatewayId": g.gateway_id,
                "rssi": g.rssi,
                "snr": g.snr,
                "metadata": {"region_common_name": up.region},
            })
            for g in up.gateways
        ],
        "txInfo": {
            "frequency": up.frequency_hz,
            "modulation": {"lora": {"bandwidth": up.bw_hz, "spreadingFactor": up.sf, "codeRate": "CR_4_5"}},
        },
    }
    return _drop_defaults(body)


def generic_body(up: AppUplink) -> dict:
    best = max(up.gateways, key=lambda g: g.rssi) if up.gateways else None
    body = {
        "devEui": up.dev_eui.upper(),
        "fPort": up.fport,
        "fCnt": up.fcnt,
        "payload": base64.b64encode(up.payload).decode(),
        "receivedAt": format_ms(up.received_ms),
        "dataRate": f"SF{up.sf}BW{up.bw_hz // 1000}",
    }
    if best is not None:
        body.update({"rssi": best.rssi, "snr": best.snr, "gatewayId": best.gateway_id})
    return body


def uplink_body(fmt: str, up: AppUplink) -> tuple[str, dict]:
    """``(collector path, JSON body)`` for one uplink in format ``fmt``."""
    if fmt == "ttn":
        return PATHS[fmt], ttn_body(up)
    if fmt == "chirpstack":
        return PATHS[fmt], chirpstack_body(up)
    if fmt == "generic":
        return PATHS[fmt], generic_body(up)
    raise ValueError(f"unknown uplink format {fmt!r}; known: {', '.join(FORMATS)}")
