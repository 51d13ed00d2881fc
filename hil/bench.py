"""The bench workflow: generate records, send them fragment by fragment through a
modem, and check through the collector's JSON API what became of each.

Record generation and the table are pure; :func:`send_record` drives a
:class:`~hil.drivers.modem.Modem`; :func:`verify` polls the collector over HTTP.
"""

from __future__ import annotations

import base64
import json
import logging
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.core import wire, xmldoc
from collector.testing.examples import seeded_record
from collector.testing.http import http
from hil.drivers.modem import Modem, PayloadTooLong

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
    #: 'sent', 'acked' (v2: the collector acknowledged it) or the error that stopped it
    status: str = "sent"
    restarts: int = 0
    downlinks: int = 0
    seconds: float = 0.0
    collector: dict = field(default_factory=dict)
    #: the record and the payloads of the message that carried it (for verification)
    record: bytes = b""
    payloads: list[bytes] = field(default_factory=list)
    #: what verification found: "match", or why the collector's document is not the one expected
    check: str = ""
    #: the msg_id of the first message of this record: others up to msg_id were cut by a DR drop
    first_msg_id: int = -1

    @property
    def next_msg_id(self) -> int:
        """The msg_id the next record must take (after every message this one used)."""
        return (self.msg_id + 1) % 256


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
    first = msg_id
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
                           clock() - start, record=record, payloads=frags, first_msg_id=first)


# --------------------------------------------------------------------------- collector API


class ApiError(Exception):
    pass


def _get_json(url: str, token: str | None, timeout: float) -> object:
    """``GET url`` from the collector's API, as JSON; :class:`ApiError` with one line
    when there is no answer, an HTTP error or a body that is not JSON."""
    try:
        r = http("GET", url, headers={"Accept": "application/json"}, timeout=timeout, token=token)
    except (OSError, ValueError) as e:  # no answer, or not a URL
        raise ApiError(f"GET {url} failed: {e}") from None
    if r.status >= 400:
        raise ApiError(f"GET {url} answered HTTP {r.status}")
    try:
        return json.loads(r.body or b"{}")
    except ValueError as e:
        raise ApiError(f"GET {url} failed: {e}") from None


def fetch_messages(base_url: str, dev_eui: str, *, token: str | None = None, timeout: float = 5.0) -> list[dict]:
    """``GET {base}/api/messages?device=DEVEUI`` → the ``messages`` list."""
    url = f"{base_url.rstrip('/')}/api/messages?" + urllib.parse.urlencode({"device": dev_eui.upper()})
    body = _get_json(url, token, timeout)
    msgs = body.get("messages") if isinstance(body, dict) else None
    if not isinstance(msgs, list):
        raise ApiError(f"GET {url}: the answer has no 'messages' list")
    return msgs


FINAL_STATES = ("complete", "partial", "incident")
#: what SentMessage.status says of a record that went out (acked: v2, the collector said ACK)
SENT = ("sent", "acked")


def fetch_message(base_url: str, uid: str, *, token: str | None = None, timeout: float = 5.0) -> dict:
    """``GET {base}/api/messages/{id}``: one message with its fragments."""
    url = f"{base_url.rstrip('/')}/api/messages/{urllib.parse.quote(uid, safe='')}"
    body = _get_json(url, token, timeout)
    if not isinstance(body, dict):
        raise ApiError(f"GET {url}: the answer is not an object")
    return body


Rebuild = Callable[[list[bytes]], bytes]


def rebuild_v1(payloads: list[bytes]) -> bytes:
    return wire.defragment(payloads)[1]


def check_message(detail: dict, sent: SentMessage, dev_eui: str, rebuild: Rebuild = rebuild_v1) -> str:
    """``match`` when the collector's closed message ``detail`` holds the document
    expected for ``sent``: complete, built from exactly the fragments sent, whose
    record is byte for byte the one sent, under the record's idempotency key.
    Otherwise the first difference."""
    if detail.get("state") != "complete" or detail.get("complete") is not True:
        return f"not complete ({detail.get('state')}, {detail.get('fragmentsReceived')} fragment(s))"
    try:
        held = [base64.b64decode(f["payload"]) for f in detail.get("fragments", []) if f.get("payload")]
    except (KeyError, TypeError, ValueError):
        return "the collector's fragments cannot be read"
    unexpected = [p for p in held if p not in sent.payloads]
    if unexpected:
        return f"{len(unexpected)} fragment(s) that were not sent in this message (msg_id reused?)"
    try:
        record = rebuild(held)
    except ValueError as e:
        return f"the fragments held do not rebuild a record: {e}"
    if record != sent.record:
        return "the record rebuilt from the fragments held differs from the record sent"
    key = xmldoc.idempotency_key(dev_eui, wire.decode_record(sent.record))
    if detail.get("idempotencyKey") != key:
        return f"idempotency key {detail.get('idempotencyKey')!r}, expected {key!r}"
    return "match"


def match_message(msgs: list[dict], sent: SentMessage) -> list[dict]:
    """The collector's messages that may be ``sent``: same msgId, newest first."""
    return [m for m in msgs if m.get("msgId") == sent.msg_id]


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
    rebuild: Rebuild = rebuild_v1,
) -> list[SentMessage]:
    """Poll the collector until every sent message is complete with the document
    expected (:func:`check_message`) and no longer pending delivery, or
    ``deadline_s`` passes; fills ``SentMessage.collector`` and ``SentMessage.check``."""
    end = clock() + deadline_s
    while True:
        try:
            msgs = fetch_messages(base_url, dev_eui, token=token)
            settled = True
            for s in sent:
                if s.status not in SENT or s.check == "match" and s.collector.get("delivery") not in (None, "pending"):
                    continue
                candidates = match_message(msgs, s)
                s.collector = candidates[0] if candidates else {}
                s.check = "" if candidates else "missing"
                for m in candidates:
                    if m.get("state") == "open":
                        s.check = "open"
                        continue
                    s.collector = m
                    s.check = check_message(fetch_message(base_url, m["id"], token=token), s, dev_eui, rebuild)
                    if s.check == "match":
                        break
                if s.check != "match" or s.collector.get("delivery") == "pending":
                    settled = False
        except ApiError as e:  # the collector may be restarting: retry until the deadline
            if clock() >= end:
                raise
            log.warning("event=api_retry reason=%r", str(e))
            sleep(poll_s)
            continue
        if settled or clock() >= end:
            return sent
        sleep(poll_s)


def verified(s: SentMessage) -> bool:
    """Sent, and the collector holds exactly the document expected."""
    return s.status in SENT and s.check == "match"


def table(sent: list[SentMessage], *, with_collector: bool) -> str:
    """A plain-text table of what was sent (and what the collector made of it)."""
    head = ["msg_id", "seq", "bytes", "DR", "S", "frags", "sent", "restarts", "secs"]
    if with_collector:
        head += ["state", "received", "delivery", "document"]
    rows = []
    for s in sent:
        row = [str(s.msg_id), str(s.record_seq), str(s.record_len), str(s.dr), str(s.size), str(s.fragments),
               s.status, str(s.restarts), f"{s.seconds:.1f}"]
        if with_collector:
            c = s.collector
            if c:
                exp = c.get("fragmentsExpected")
                row += [str(c.get("state", "?")), f"{c.get('fragmentsReceived', '?')}/{exp if exp is not None else '?'}",
                        str(c.get("delivery") or "-"), s.check or "-"]
            else:
                row += ["missing", "-", "-", "-"]
        rows.append(row)
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(lines)
