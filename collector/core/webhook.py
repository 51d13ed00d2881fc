"""Webhook bodies decoded straight into an :class:`~collector.core.uplink.Uplink`.

The Things Stack's uplink body - nearly every request the collector gets - is
decoded by a ``msgspec`` schema in one pass over the bytes (no intermediate dict,
no field-by-field checks in Python): measured in ``reports/ingest.md``. The schema
accepts exactly the common, well-formed shape (types strict: no booleans for
integers, no numbers in strings, no ``null`` where the field may only be left out).
Whatever it refuses - a bad body, or a rarer but valid shape (an older
``data_rate_index`` layout, a frame counter sent as a string, an out-of-range
receive time, ...) - goes to the hand-written reading in :mod:`collector.core.ingest`,
which accepts the valid ones and names the exact field and problem of the others
(the 400 reason). So the schema is a fast path whose every answer the full reading
would give too; ``tests/collector/test_webhook.py`` checks that for each shape.

ChirpStack and the collector's own format are less frequent and take the full
reading directly.
"""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import UNSET, Meta, Struct, UnsetType

from collector.core import ingest
from collector.core.uplink import Uplink

_U8 = Annotated[int, Meta(ge=0, le=255)]
_U32 = Annotated[int, Meta(ge=0, le=ingest.U32)]
_NUM = float | None | UnsetType


class _Lora(Struct):
    spreading_factor: Annotated[int, Meta(ge=0, le=12)] = 0
    bandwidth: Annotated[int, Meta(ge=0)] = 0


class _DataRate(Struct):
    lora: _Lora | None = None
    data_rate_index: int | UnsetType = UNSET  # older layout: left to the full reading


class _Settings(Struct):
    frequency: _U32 | str | UnsetType = UNSET  # a uint64 is a string in protobuf JSON
    data_rate: _DataRate | None = None
    data_rate_index: int | UnsetType = UNSET


class _GatewayIds(Struct):
    gateway_id: str | None = None


class _Rx(Struct):
    gateway_ids: _GatewayIds | None = None
    rssi: _NUM = UNSET
    channel_rssi: _NUM = UNSET
    snr: float | None = None


class _Up(Struct):
    f_port: _U8 = 0
    f_cnt: _U32 = 0
    frm_payload: str | None = None
    settings: _Settings | None = None
    received_at: str | UnsetType = UNSET
    rx_metadata: list[_Rx] | None = None


class _Ids(Struct):
    dev_eui: str


class _TTS(Struct):
    end_device_ids: _Ids
    uplink_message: _Up
    received_at: str | UnsetType = UNSET


_TTS_DECODER = msgspec.json.Decoder(_TTS)


class _Refused(Exception):  # noqa: N818 - control flow: the full reading decides
    pass


def _rssi(g: _Rx) -> float | None:
    """The gateway's RSSI as the full reading takes it (``rssi``, else ``channel_rssi``)."""
    r = g.rssi if g.rssi is not UNSET else g.channel_rssi
    return None if r is UNSET else r  # type: ignore[return-value]


#: longer bodies take the full reading: the contract refuses an integer literal of
#: more than 4300 digits anywhere in a body (Python's limit; "malformed JSON"), which
#: the schema would skip in a field it does not read. A body of one device's uplink
#: through a few gateways is 1-3 kB.
FAST_MAX_BYTES = 4300


def _tts(body: bytes, now_ms: int | None) -> Uplink:
    if len(body) > FAST_MAX_BYTES:
        raise _Refused
    try:
        doc = _TTS_DECODER.decode(body)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        raise _Refused from None
    up = doc.uplink_message
    dev_eui = doc.end_device_ids.dev_eui
    if len(dev_eui) != 16 or not ingest._HEX16.match(dev_eui):
        raise _Refused
    settings = up.settings or _Settings()
    dr = settings.data_rate or _DataRate()
    if settings.data_rate_index is not UNSET or dr.data_rate_index is not UNSET:
        raise _Refused
    freq = settings.frequency
    if freq is UNSET:
        freq = None
    elif isinstance(freq, str):
        if not freq.isascii() or not freq.isdigit() or len(freq) > 10 or int(freq) > ingest.U32:
            raise _Refused
        freq = int(freq)
    lora = dr.lora
    data_rate = ingest._dr_name(lora.spreading_factor or None, lora.bandwidth) if lora is not None else None
    stamp = up.received_at if up.received_at is not UNSET else doc.received_at
    ns_time = None
    if stamp is UNSET:
        received_ms = now_ms
    else:
        where = "uplink_message.received_at" if up.received_at is not UNSET else "received_at"
        received_ms, ns_time = ingest._time_ms(stamp, where, now_ms)  # IngestError: the full reading's reason
    gateway = rssi = snr = None
    rx = up.rx_metadata
    if rx:
        best = None
        for g in rx:
            r = _rssi(g)
            if r is not None and (best is None or r > best[0]):
                best = (r, g)
        g = best[1] if best is not None else rx[0]
        if g.gateway_ids is not None:
            gateway = g.gateway_ids.gateway_id
            if gateway is not None and not gateway.isascii():
                gateway.encode()  # a lone surrogate: UnicodeEncodeError, refused below
        rssi, snr = _rssi(g), g.snr  # finite: msgspec refuses 1e400, NaN, Infinity
    if up.frm_payload is None:
        payload = b""
    else:
        payload = ingest._b64(up.frm_payload, "uplink_message.frm_payload")
    return Uplink(
        dev_eui=dev_eui.upper(), fport=up.f_port, payload=payload, received_ms=received_ms, fcnt=up.f_cnt,
        data_rate=data_rate, region=ingest.region_for_frequency(freq), frequency_hz=freq, gateway=gateway,
        rssi=rssi, snr=snr, source="ttn", ns_time=ns_time,
    )


_FAST = {"ttn": _tts}


def parse_body(integration: str, body: bytes, now_ms: int | None, default_region: str = "EU868") -> Uplink:
    """The uplink in ``body`` (an ``integration``'s webhook body); raises
    :class:`~collector.core.ingest.IngestError` (the reason) or
    :class:`~collector.core.ingest.Ignored` as :mod:`collector.core.ingest` does."""
    fast = _FAST.get(integration)
    if fast is not None:
        try:
            return fast(body, now_ms)
        except (_Refused, ingest.IngestError, UnicodeEncodeError):
            pass
    return ingest.PARSERS[integration](ingest.parse_json_body(body), now_ms, default_region)
