"""Point-to-point bench mode: no gateway, no network server.

A sender module (``mac pause`` + ``radio tx``) sends each fragment as a P2P frame;
a receiver module in ``radio rx 0`` hears it and :func:`run_gateway` forwards it to
the collector's own ingest format (``POST /uplink``).

P2P frame (defined here, see docs/bench.md): the 8-byte DevEUI of the sending device,
big-endian, then the fragment (the FRMPayload it would have sent on FPort 16).
With ``dev_eui`` set the gateway takes frames as bare fragments of that one device.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable

from collector.core import lorawan, wire
from devicesim.formats import AppUplink
from hil.bridge import Delivery, deliver
from hil.drivers.modem import ModemError, ModemTimeout
from hil.drivers.rn2483 import RN2483

log = logging.getLogger("hil.p2p")

EUI_LEN = 8
#: largest P2P fragment: a radio frame carries up to 255 bytes, the wire format 242
MAX_FRAGMENT = wire.MAX_SIZE


def encode_frame(dev_eui: str, fragment: bytes) -> bytes:
    eui = bytes.fromhex(dev_eui)
    if len(eui) != EUI_LEN:
        raise ValueError(f"DevEUI {dev_eui!r} is not 16 hex digits")
    return eui + fragment


def decode_frame(frame: bytes, dev_eui: str | None = None) -> tuple[str, bytes]:
    """``(DEVEUI, fragment)`` of a received frame; ValueError when too short."""
    if dev_eui:
        return dev_eui.upper(), frame
    if len(frame) <= EUI_LEN:
        raise ValueError(f"P2P frame of {len(frame)} bytes is too short for an 8-byte DevEUI and a fragment")
    return frame[:EUI_LEN].hex().upper(), frame[EUI_LEN:]


def prepare_radio(modem: RN2483, sf: int, *, wdt_ms: int = 0) -> None:
    modem.pause_mac()
    modem.radio_set_sf(sf)
    modem.radio_set_wdt(wdt_ms)


def send_record_p2p(modem: RN2483, dev_eui: str, msg_id: int, record: bytes, *, size: int = MAX_FRAGMENT - EUI_LEN,
                    progress: Callable[[int, int], None] | None = None) -> int:
    """Send one record as P2P frames (after :func:`prepare_radio`); returns the count."""
    frags = wire.fragment(msg_id, record, size)
    for i, frag in enumerate(frags):
        modem.radio_tx(encode_frame(dev_eui, frag))
        if progress:
            progress(i + 1, len(frags))
    return len(frags)


def run_gateway(
    modem: RN2483,
    base_url: str,
    *,
    sf: int = 7,
    token: str | None = None,
    dev_eui: str | None = None,
    stop: threading.Event | None = None,
    max_frames: int | None = None,
    on_delivery: Callable[[Delivery], None] | None = None,
    poll_s: float = 0.5,
) -> int:
    """Receive P2P frames and POST each to ``{base_url}/uplink`` until ``stop`` is set
    (or ``max_frames`` were forwarded). Returns the number forwarded."""
    stop = stop or threading.Event()
    prepare_radio(modem, sf)
    fcnt: dict[str, int] = {}
    forwarded = 0
    listening = False
    while not stop.is_set() and (max_frames is None or forwarded < max_frames):
        if not listening:
            modem.radio_rx_start()
            listening = True
        try:
            frame = modem.radio_rx_wait(poll_s)
        except ModemTimeout:
            continue
        listening = False
        if frame is None:  # radio_err: the watchdog ended the receive; listen again
            continue
        try:
            eui, payload = decode_frame(frame, dev_eui)
        except ValueError as e:
            log.warning("event=p2p_frame_dropped reason=%r", str(e))
            continue
        n = fcnt.get(eui, 0)
        fcnt[eui] = n + 1
        now_ns = time.time_ns()
        up = AppUplink(
            dev_eui=eui, fport=wire.FPORT, fcnt=n, payload=payload, received_ns=now_ns, sf=sf,
            bw_hz=125_000,
            airtime_s=lorawan.time_on_air(sf, 125_000, len(frame)),
        )
        d = deliver(base_url, "generic", up, token=token)
        forwarded += 1
        if on_delivery:
            on_delivery(d)
    with contextlib.suppress(ModemError):
        modem.resume_mac()
    return forwarded
