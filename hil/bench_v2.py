"""The bench's v2 record sender: the core's device state machine
(:class:`collector.core.device.Device`, wire-format-v2.md section 4) over a real
module driver.

Each record becomes one message sent at the N of the module's DR (data fragments,
then ``parity`` parity rows), then polls, one record at a time (the next is submitted
when the device has nothing left to send for the last, as a logger that makes a
record every few hours; submitting all at once would let the fifth evict the first
from the four the device keeps before its answer could arrive); every FPort-17 downlink the module receives
in an uplink's RX windows (ACK, NEED, REDUNDANCY) goes to the state machine, which
answers a NEED with the next parity rows. A Class A module hears downlinks only after
its own uplinks, so the sender waits ``poll_interval`` between two polls of a message
(the time the collector and the network server have to queue their answer) and
stops when the device has nothing left to send.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from collector.core import wire2
from collector.core.device import Device
from hil.bench import Progress, SentMessage
from hil.drivers.modem import Modem, ModemError, PayloadTooLong

log = logging.getLogger("hil.bench")


@dataclass(frozen=True)
class V2Settings:
    parity: int = 2
    polls: int = 3
    rounds: int = 3
    #: seconds between two polls of one message (real modules: several seconds, as
    #: the network server must queue the answer before the next uplink)
    poll_interval: float = 5.0
    #: a bound on uplinks per run, so a run never loops forever
    max_uplinks: int = 5000


def rebuild_v2(payloads: list[bytes]) -> bytes:
    frags = [f for f in map(wire2.parse_v2, payloads) if isinstance(f, wire2.V2Fragment)]
    return wire2.rebuild_record(frags)


def send_records_v2(
    modem: Modem,
    records: list[bytes],
    first_msg_id: int,
    settings: V2Settings = V2Settings(),
    *,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[list[SentMessage], Device]:
    """Send ``records`` as v2 messages ``first_msg_id``, ``first_msg_id + 1``, ...
    and run the repair loop until the device is done; per record a
    :class:`SentMessage` whose ``payloads`` are every fragment sent (data, parity,
    repairs) and whose ``status`` is ``acked`` when the collector acknowledged it."""
    dr = modem.get_dr()
    size = modem.max_payload()
    device = Device(parity=settings.parity, polls=settings.polls, rounds=settings.rounds,
                    first_msg_id=first_msg_id, poll_interval=settings.poll_interval)
    t0 = clock()
    sent: dict[int, SentMessage] = {}
    waiting = list(enumerate(records))
    uplinks = 0
    while uplinks < settings.max_uplinks:
        now = clock() - t0
        if waiting and device.idle:
            # one record at a time, as a logger makes them: the next starts when the
            # device has nothing left to send for the last (done, or waiting for a late answer)
            seq, record = waiting.pop(0)
            msg_id = device.submit(record, size, now)
            k, _, _ = wire2.geometry(len(record), size)
            sent[msg_id] = SentMessage(msg_id, seq, len(record), size, k, dr, record=record, first_msg_id=msg_id)
        payload = device.next_uplink(now)
        if payload is None:
            due = device.next_due(now)
            if due is None:
                break
            sleep(max(0.0, due - now))
            continue
        msg = sent.get(payload[0])
        try:
            result = modem.send(wire2.FPORT_V2, payload)
        except PayloadTooLong as e:
            raise ModemError(f"{e}: the DR dropped during a v2 message, which is sent at one rate; "
                             "turn ADR off on the bench") from None
        uplinks += 1
        if msg is not None and payload[1] != wire2.POLL and payload not in msg.payloads:
            msg.payloads.append(payload)
            msg.fragments = len(msg.payloads)
            if progress:
                progress(len(msg.payloads), msg.fragments)
        for dl in list(result.downlinks) + modem.downlinks():
            if dl.port != wire2.FPORT_V2:
                continue
            for cmd in wire2.decode_downlink(dl.payload):
                m = sent.get(getattr(cmd, "msg_id", -1))
                if m is None:
                    continue
                m.downlinks += 1
                if isinstance(cmd, wire2.Ack):
                    m.status = "acked"
                elif isinstance(cmd, wire2.Need):
                    m.restarts += 1  # a repair round asked for (the table's restarts column)
            log.info("event=downlink fport=%d payload=%s", dl.port, dl.payload.hex())
            device.downlink(dl.payload, clock() - t0)
    else:
        log.warning("event=v2_uplink_bound uplinks=%d", uplinks)
    end = clock() - t0
    for m in sent.values():
        m.seconds = end
    return list(sent.values()), device
