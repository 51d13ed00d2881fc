"""Parsers of the three ingest formats into :class:`~collector.core.uplink.Uplink`.

Shapes per ``docs/spec/ingest-formats.md``: The Things Stack v3 webhook uplink,
ChirpStack v4 HTTP integration (JSON ``up`` event), and the collector's own format.
Network servers leave out fields whose value is a default (0, empty, false), so every
optional field is read with a default. A body that cannot be used raises
:class:`IngestError` whose message names the exact field and problem (the service
answers it as 400); a well-formed body that is not an uplink raises :class:`Ignored`
(answered 202 "ignored").

Pure code: the caller passes ``now_ms`` for uplinks that carry no receive time
(``None`` leaves it to the process that owns the clock to fill in).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Callable
from typing import Any

import orjson

from collector.core import lorawan
from collector.core.timefmt import receive_ms
from collector.core.uplink import Uplink

_HEX16 = re.compile(r"^[0-9A-Fa-f]{16}\Z")
_INT_TEXT = re.compile(r"-?\d{1,20}")
#: frame counters and frequencies (Hz) are 32-bit unsigned in LoRaWAN and both network servers
U32 = 2**32 - 1

#: TTS message types that may be posted to the same URL and are not uplinks
_TTS_OTHER = (
    "join_accept", "downlink_ack", "downlink_nack", "downlink_sent", "downlink_failed",
    "downlink_queued", "downlink_queue_invalidated", "location_solved", "service_data",
    "uplink_normalized",
)


class IngestError(ValueError):
    """The body cannot be used; the message names the field and the problem."""


class Ignored(Exception):  # noqa: N818 - an outcome, not an error
    """A well-formed body that carries no uplink the collector handles."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- helpers


def parse_json_body(body: bytes) -> dict:
    """Decode a request body as a JSON object."""
    if not body:
        raise IngestError("the request body is empty; a JSON object is required")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_json_slow(body)  # the exact error, or what orjson does not read (NaN, ...)
    if not isinstance(doc, dict):
        raise IngestError(f"the JSON body must be an object, not {_kind(doc)}")
    return doc


def _parse_json_slow(body: bytes) -> Any:
    """The standard library's reading of ``body``, and its error messages."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IngestError(f"the request body is not UTF-8 (byte {e.start})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise IngestError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise IngestError("malformed JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer literal with more than 4300 digits
        raise IngestError(f"malformed JSON: {e}"[:200]) from None
    try:
        # a lone UTF-16 surrogate ("\\ud800") is valid JSON but no character: such a
        # string can be neither stored nor passed on
        json.dumps(doc, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError as e:
        raise IngestError(f"the JSON body holds a lone UTF-16 surrogate escape (\\u{ord(e.object[e.start]):04x}), "
                          f"which is not a character") from None
    except (ValueError, RecursionError):  # NaN, Infinity, deep nesting: for the field checks
        pass
    return doc


def _kind(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "a boolean"
    if isinstance(v, int | float):
        return "a number"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, list):
        return "an array"
    if isinstance(v, dict):
        return "an object"
    return type(v).__name__


def _obj(doc: dict, key: str, where: str, required: bool = False) -> dict:
    v = doc.get(key)
    if v is None:
        if required:
            raise IngestError(f"field {where}{key} is missing")
        return {}
    if not isinstance(v, dict):
        raise IngestError(f"field {where}{key} must be an object, not {_kind(v)}")
    return v


def _list(doc: dict, key: str, where: str) -> list:
    v = doc.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        raise IngestError(f"field {where}{key} must be an array, not {_kind(v)}")
    return v


def _int(v: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if type(v) is int:  # the usual case, first
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise IngestError(f"field {name} is {v}; must be {lo}..{hi}")
        return v
    if isinstance(v, bool):
        raise IngestError(f"field {name} must be an integer, not a boolean")
    if isinstance(v, int):
        n = v
    elif isinstance(v, float) and v.is_integer():
        n = int(v)
    elif isinstance(v, str) and _INT_TEXT.fullmatch(v.strip()):
        # 64-bit integers are strings in protobuf JSON
        n = int(v)
    else:
        raise IngestError(f"field {name} must be an integer, not {_kind(v)} {v!r}"[:200])
    if (lo is not None and n < lo) or (hi is not None and n > hi):
        raise IngestError(f"field {name} is {n}; must be {lo}..{hi}")
    return n


def _num(v: Any, name: str) -> float | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise IngestError(f"field {name} must be a number, not {_kind(v)}")
    f = float(v)
    if not math.isfinite(f):  # NaN, Infinity, 1e400: no JSON shows them again
        raise IngestError(f"field {name} must be a finite number, not {f}")
    return f


def _str(v: Any, name: str) -> str:
    if not isinstance(v, str):
        raise IngestError(f"field {name} must be a string, not {_kind(v)}")
    return v


def _eui(v: Any, name: str) -> str:
    if v is None:
        raise IngestError(f"field {name} is missing")
    s = _str(v, name)
    if not _HEX16.match(s):
        raise IngestError(f"field {name} is {s[:40]!r}; a DevEUI is 16 hex digits")
    return s.upper()


def _b64(v: Any, name: str) -> bytes:
    s = _str(v, name)
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError):
        raise IngestError(f"field {name} is not valid base64") from None


def _time_ms(v: Any, name: str, now_ms: int | None) -> tuple[int | None, str | None]:
    """A receive time field: ``(ms, None)``, or ``(now_ms, text)`` when the time is
    unset or out of range (:func:`~collector.core.timefmt.receive_ms`): the collector's
    own time, with the network server's text kept."""
    s = _str(v, name)
    try:
        ms = receive_ms(s)
    except ValueError:
        raise IngestError(f"field {name} is {s[:60]!r}; an RFC 3339 time stamp is required") from None
    return (ms, None) if ms is not None else (now_ms, s[:64])


def region_for_frequency(freq_hz: int | None) -> str | None:
    """The region whose band contains ``freq_hz`` (EU868 863-870 MHz, US915 902-928 MHz)."""
    if freq_hz is None:
        return None
    if 863_000_000 <= freq_hz <= 870_000_000:
        return "EU868"
    if 902_000_000 <= freq_hz <= 928_000_000:
        return "US915"
    return None


def _dr_name(sf: int | None, bw_hz: int | None) -> str | None:
    if sf is None or not bw_hz:
        return None
    return f"SF{sf}BW{bw_hz // 1000}"


def _dr_from_index(region_name: str | None, index: int, name: str) -> str:
    reg = lorawan.region(region_name or "EU868")
    try:
        return reg.dr(index).name
    except ValueError as e:
        raise IngestError(f"field {name}: {e}") from None


def _best_gateway(rx: list[dict], rssi_key: str = "rssi") -> dict | None:
    best = None
    for g in rx:
        if not isinstance(g, dict):
            continue
        r = g.get(rssi_key, g.get("channel_rssi"))
        if not isinstance(r, int | float) or isinstance(r, bool):
            continue
        if best is None or r > best[0]:
            best = (r, g)
    if best is None:
        for g in rx:
            if isinstance(g, dict):
                return g
        return None
    return best[1]


# --------------------------------------------------------------------------- The Things Stack v3


def parse_ttn(doc: dict, now_ms: int | None, default_region: str = "EU868") -> Uplink:
    """A The Things Stack v3 webhook uplink message."""
    up = doc.get("uplink_message")
    if up is None:
        other = [k for k in _TTS_OTHER if k in doc]
        if other:
            raise Ignored(f"not an uplink message ({other[0]})")
        raise IngestError("field uplink_message is missing")
    if not isinstance(up, dict):
        raise IngestError(f"field uplink_message must be an object, not {_kind(up)}")
    ids = _obj(doc, "end_device_ids", "", required=True)
    dev_eui = _eui(ids.get("dev_eui"), "end_device_ids.dev_eui")
    w = "uplink_message."
    fport = _int(up.get("f_port", 0), w + "f_port", 0, 255)
    fcnt = _int(up["f_cnt"], w + "f_cnt", 0, U32) if "f_cnt" in up else 0
    payload = _b64(up["frm_payload"], w + "frm_payload") if up.get("frm_payload") is not None else b""

    settings = _obj(up, "settings", w)
    freq = _int(settings["frequency"], w + "settings.frequency", 0, U32) if "frequency" in settings else None
    region = region_for_frequency(freq)
    dr_obj = _obj(settings, "data_rate", w + "settings.")
    lora = _obj(dr_obj, "lora", w + "settings.data_rate.")
    data_rate = None
    if lora:
        sf = _int(lora.get("spreading_factor", 0), w + "settings.data_rate.lora.spreading_factor", 0, 12)
        bw = _int(lora.get("bandwidth", 0), w + "settings.data_rate.lora.bandwidth", 0)
        data_rate = _dr_name(sf or None, bw)
    if data_rate is None and ("data_rate_index" in settings or "data_rate_index" in dr_obj):
        # older versions: the index beside (or inside) data_rate
        src, key = (settings, "settings.") if "data_rate_index" in settings else (dr_obj, "settings.data_rate.")
        idx = _int(src["data_rate_index"], w + key + "data_rate_index", 0, 15)
        data_rate = _dr_from_index(region or default_region, idx, w + key + "data_rate_index")

    ns_time = None
    if "received_at" in up:
        received_ms, ns_time = _time_ms(up["received_at"], w + "received_at", now_ms)
    elif "received_at" in doc:
        received_ms, ns_time = _time_ms(doc["received_at"], "received_at", now_ms)
    else:
        received_ms = now_ms

    rx = _list(up, "rx_metadata", w)
    g = _best_gateway(rx)
    gateway = rssi = snr = None
    if g is not None:
        gids = g.get("gateway_ids") if isinstance(g.get("gateway_ids"), dict) else {}
        gateway = gids.get("gateway_id") if isinstance(gids.get("gateway_id"), str) else None
        rssi = _num(g.get("rssi", g.get("channel_rssi")), w + "rx_metadata[].rssi")
        snr = _num(g.get("snr"), w + "rx_metadata[].snr")
    return Uplink(
        dev_eui=dev_eui, fport=fport, payload=payload, received_ms=received_ms, fcnt=fcnt,
        data_rate=data_rate, region=region, frequency_hz=freq, gateway=gateway, rssi=rssi, snr=snr,
        source="ttn", ns_time=ns_time,
    )


# --------------------------------------------------------------------------- ChirpStack v4

#: ChirpStack's region common names (its ``Region`` enum: ``AS923_2`` and the like)
#: for the regions the collector knows; both separators are accepted
_CS_REGIONS = {"EU868": "EU868", "US915": "US915", "AU915": "AU915", "AS923": "AS923-1",
               "AS923_2": "AS923-2", "AS923_3": "AS923-3", "AS923_4": "AS923-4",
               "AS923-1": "AS923-1", "AS923-2": "AS923-2", "AS923-3": "AS923-3", "AS923-4": "AS923-4"}


def parse_chirpstack(doc: dict, now_ms: int | None, default_region: str = "EU868") -> Uplink:
    """A ChirpStack v4 HTTP integration ``up`` event (JSON marshaler)."""
    info = _obj(doc, "deviceInfo", "", required=True)
    dev_eui = _eui(info.get("devEui"), "deviceInfo.devEui")
    fport = _int(doc.get("fPort", 0), "fPort", 0, 255)
    fcnt = _int(doc.get("fCnt", 0), "fCnt", 0, U32)
    payload = _b64(doc["data"], "data") if doc.get("data") is not None else b""

    rx = _list(doc, "rxInfo", "")
    region = None
    for g in rx:
        md = g.get("metadata") if isinstance(g, dict) else None
        if isinstance(md, dict):
            name = md.get("region_common_name")
            if isinstance(name, str) and name.upper() in _CS_REGIONS:
                region = _CS_REGIONS[name.upper()]
                break
    tx = _obj(doc, "txInfo", "")
    freq = _int(tx["frequency"], "txInfo.frequency", 0, U32) if "frequency" in tx else None
    region = region or region_for_frequency(freq)
    mod = _obj(tx, "modulation", "txInfo.")
    lora = _obj(mod, "lora", "txInfo.modulation.")
    data_rate = None
    if lora:
        sf = _int(lora.get("spreadingFactor", 0), "txInfo.modulation.lora.spreadingFactor", 0, 12)
        bw = _int(lora.get("bandwidth", 0), "txInfo.modulation.lora.bandwidth", 0)
        data_rate = _dr_name(sf or None, bw)
    if data_rate is None and not mod:
        data_rate = _dr_from_index(region or default_region, _int(doc.get("dr", 0), "dr", 0, 15), "dr")

    ns_time = None
    if "time" in doc:
        received_ms, ns_time = _time_ms(doc["time"], "time", now_ms)
    else:
        received_ms = now_ms
        for g in rx:
            t = g.get("nsTime") or g.get("gwTime") if isinstance(g, dict) else None
            if isinstance(t, str):
                received_ms, ns_time = _time_ms(t, "rxInfo[].nsTime", now_ms)
                break
    g = _best_gateway(rx)
    gateway = rssi = snr = None
    if g is not None:
        gateway = g.get("gatewayId") if isinstance(g.get("gatewayId"), str) else None
        rssi = _num(g.get("rssi"), "rxInfo[].rssi")
        snr = _num(g.get("snr"), "rxInfo[].snr")
    return Uplink(
        dev_eui=dev_eui, fport=fport, payload=payload, received_ms=received_ms, fcnt=fcnt,
        data_rate=data_rate, region=region, frequency_hz=freq, gateway=gateway, rssi=rssi, snr=snr,
        source="chirpstack", ns_time=ns_time,
    )


# --------------------------------------------------------------------------- the collector's own


def parse_generic(doc: dict, now_ms: int | None, default_region: str = "EU868") -> Uplink:
    """The collector's own format: ``devEui``, ``fPort``, ``payload`` required."""
    for key in ("devEui", "fPort", "payload"):
        if key not in doc:
            raise IngestError(f"field {key} is missing")
    dev_eui = _eui(doc["devEui"], "devEui")
    fport = _int(doc["fPort"], "fPort", 0, 255)
    payload = _b64(doc["payload"], "payload")
    fcnt = _int(doc["fCnt"], "fCnt", 0, U32) if doc.get("fCnt") is not None else None
    received_ms, ns_time = (_time_ms(doc["receivedAt"], "receivedAt", now_ms) if doc.get("receivedAt") is not None
                            else (now_ms, None))
    data_rate = None
    if doc.get("dataRate") is not None:
        try:
            sf, bw = lorawan.parse_data_rate_name(_str(doc["dataRate"], "dataRate"))
        except ValueError as e:
            raise IngestError(f"field dataRate: {e}") from None
        data_rate = _dr_name(sf, bw)
    freq = _int(doc["frequency"], "frequency", 0, U32) if doc.get("frequency") is not None else None
    region = None
    if doc.get("region") is not None:
        name = _str(doc["region"], "region").upper()
        try:
            lorawan.region(name)
        except ValueError as e:
            raise IngestError(f"field region: {e}") from None
        region = name
    region = region or region_for_frequency(freq)
    gateway = _str(doc["gatewayId"], "gatewayId") if doc.get("gatewayId") is not None else None
    return Uplink(
        dev_eui=dev_eui, fport=fport, payload=payload, received_ms=received_ms, fcnt=fcnt,
        data_rate=data_rate, region=region, frequency_hz=freq, gateway=gateway,
        rssi=_num(doc.get("rssi"), "rssi"), snr=_num(doc.get("snr"), "snr"), source="generic", ns_time=ns_time,
    )


PARSERS: dict[str, Callable[[dict, int | None, str], Uplink]] = {
    "ttn": parse_ttn,
    "chirpstack": parse_chirpstack,
    "generic": parse_generic,
}
