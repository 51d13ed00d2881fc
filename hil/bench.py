"""The bench workflow: generate records, send them fragment by fragment through a
modem, and check through the collector's JSON API what became of each.

Record generation and the table are pure; :func:`send_record` drives a
:class:`~hil.modem.Modem`; :func:`verify` polls the collector over HTTP.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.core import wire
from collector.testing.examples import seeded_record
from collector.testing.http import http
from hil.modem import Modem, PayloadTooLong

log = logging.getLogger("hil.bench")


def make_record(serial: int, seq: int, *, samples: int = 144, start_time: int = 1_795_000_000,
                seed: int = 0) -> wire.Record:
    """A schema-1 record with two channels of ``samples`` samples and all four
    optional blocks (658 bytes at the default 144 samples: 74 fragments at US915
    DR0, 3 at DR3): the project's one generator
    (:func:`collector.testing.examples.seeded_record`). Deterministic for (serial,
    seq, seed)."""
    return seeded_record(serial, seq, samples=samples, start_time=start_time, seed=seed)


@dataclass
class SentMessage:
    msg_id: int
    record_seq: int
    record_len: int
    size: int
    fragments: int
    dr: int
    #: 'sent' or the error that stopped it
    status: str = "sent"
    restarts: int = 0
    downlinks: int = 0
    seconds: float = 0.0
    collector: dict = field(default_factory=dict)


Progress = Callable[[int, int], None]


def send_record(
    modem: Modem,
    msg_id: int,
    record: bytes,
    *,
    fport: int = wire.FPORT,
    max_restarts: int = 3,
    progress: Progress | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> SentMessage:
    """Send one record as one message at the module's current DR's N.

    On ``invalid_data_len`` (the DR dropped, e.g. by ADR) the record is fragmented
    again at the new N. When fragments at the old size already went out, the
    restarted message takes the next msg_id, so it cannot mix with the cut one.
    """
    start = clock()
    restarts = 0
    downlinks = 0
    while True:
        dr = modem.get_dr()
        size = modem.max_payload()
        frags = wire.fragment(msg_id, record, size)
        sent = 0
        try:
            for i, frag in enumerate(frags):
                res = modem.send(fport, frag)
                downlinks += len(res.downlinks)
                sent = i + 1
                if progress:
                    progress(i + 1, len(frags))
        except PayloadTooLong as e:
            restarts += 1
            log.warning("event=refragment msg_id=%d sent=%d reason=%r", msg_id, sent, str(e))
            if restarts > max_restarts:
                raise
            if sent:
                msg_id = (msg_id + 1) % 256
            continue
        return SentMessage(msg_id, -1, len(record), size, len(frags), dr, "sent", restarts, downlinks,
                           clock() - start)


# --------------------------------------------------------------------------- collector API


class ApiError(Exception):
    pass


def fetch_messages(base_url: str, dev_eui: str, *, token: str | None = None, timeout: float = 5.0) -> list[dict]:
    """``GET {base}/api/messages?device=DEVEUI`` → the ``messages`` list."""
    url = f"{base_url.rstrip('/')}/api/messages?" + urllib.parse.urlencode({"device": dev_eui.upper()})
    try:
        r = http("GET", url, headers={"Accept": "application/json"}, timeout=timeout, token=token)
    except (OSError, ValueError) as e:  # no answer, or not a URL
        raise ApiError(f"GET {url} failed: {e}") from None
    if r.status >= 400:
        raise ApiError(f"GET {url} answered HTTP {r.status}")
    try:
        body = json.loads(r.body or b"{}")
    except ValueError as e:
        raise ApiError(f"GET {url} failed: {e}") from None
    msgs = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(msgs, list):
        raise ApiError(f"GET {url}: the answer has no 'messages' list")
    return msgs


FINAL_STATES = ("complete", "partial", "incident")


def match_message(msgs: list[dict], sent: SentMessage) -> dict | None:
    """The collector's message for ``sent``: same msgId and fragment count, latest."""
    found = None
    for m in msgs:
        if m.get("msgId") != sent.msg_id:
            continue
        expected = m.get("fragmentsExpected")
        if expected not in (None, sent.fragments):
            continue
        found = m
    return found


def verify(
    base_url: str,
    dev_eui: str,
    sent: list[SentMessage],
    *,
    token: str | None = None,
    deadline_s: float = 30.0,
    poll_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> list[SentMessage]:
    """Poll the collector until every sent message is complete (and delivered or
    dead) or ``deadline_s`` passes; fills ``SentMessage.collector``."""
    end = clock() + deadline_s
    while True:
        try:
            msgs = fetch_messages(base_url, dev_eui, token=token)
        except ApiError as e:  # the collector may be restarting: retry until the deadline
            if clock() >= end:
                raise
            log.warning("event=api_retry reason=%r", str(e))
            sleep(poll_s)
            continue
        settled = True
        for s in sent:
            if s.status != "sent":
                continue
            m = match_message(msgs, s)
            s.collector = m or {}
            if m is None or m.get("state") != "complete" or m.get("delivery") == "pending":
                settled = False
        if settled or clock() >= end:
            return sent
        sleep(poll_s)


def table(sent: list[SentMessage], *, with_collector: bool) -> str:
    """A plain-text table of what was sent (and what the collector made of it)."""
    head = ["msg_id", "seq", "bytes", "DR", "S", "frags", "sent", "restarts", "secs"]
    if with_collector:
        head += ["state", "received", "delivery"]
    rows = []
    for s in sent:
        row = [str(s.msg_id), str(s.record_seq), str(s.record_len), str(s.dr), str(s.size), str(s.fragments),
               s.status, str(s.restarts), f"{s.seconds:.1f}"]
        if with_collector:
            c = s.collector
            if c:
                exp = c.get("fragmentsExpected")
                row += [str(c.get("state", "?")), f"{c.get('fragmentsReceived', '?')}/{exp if exp is not None else '?'}",
                        str(c.get("delivery") or "-")]
            else:
                row += ["missing", "-", "-"]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
