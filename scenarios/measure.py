"""Ground truth versus what the Web App and the collector ended up with (pure).

:func:`expected_outcome` says, for one record and the fragments of it the collector
acknowledged, what the contract requires: a complete document (byte for byte), a
partial document (byte for byte, naming exactly the missing fragments and blocks),
an incident, or nothing (no fragment reached the collector). :func:`measure` turns
those expectations and the observations of a run into the named measurements of
docs/scenarios.md; every measurement is defined there.
"""

from __future__ import annotations

import dataclasses
import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from lxml import etree

from collector.core.wire import BLOCK_NAMES, BLOCK_SIZES, chunk_offset, decode_record, required_length
from collector.core.wire2 import parse_v2
from collector.core.xmldoc import Transport, build_document, idempotency_key
from scenarios.yields import YIELD_MEASUREMENTS, Fate, by_wire, yield_values

#: name -> one-line definition (docs/scenarios.md has the full ones)
MEASUREMENTS: dict[str, str] = {
    "records": "records the devices started to send",
    "records_reached": "records of which at least one fragment was acknowledged by the collector",
    "uplinks": "uplink deliveries the network server made (duplicates included)",
    "uplinks_acked": "uplinks the collector answered 202",
    "uplinks_refused": "uplinks not taken because the collector was down (killed)",
    "ingest_errors": "uplinks answered anything but 202 while the collector was up",
    "collision_loss": "uplinks heard by no gateway because of a collision / uplinks the devices sent "
                      "(the simulator's count; n/a for the radio rig)",
    "expected_documents": "records whose required section reached the collector (a document is due)",
    "expected_complete": "records all of whose fragments reached the collector",
    "expected_incidents": "records that reached the collector without their whole required section",
    "documents": "distinct documents the Web App stored",
    "documents_complete": "stored documents with complete=\"true\"",
    "documents_partial": "stored documents with complete=\"false\"",
    "delivered_ratio": "expected documents the Web App stored / expected documents",
    "missing_documents": "expected documents the Web App did not store",
    "complete_delivered_ratio": "records all of whose fragments were acknowledged that the Web App got as an exact "
                                "complete document / such records (below 1.0: a deadline closed a message early)",
    "complete_documents_exact": "stored complete documents byte-equal to the one built from ground truth / stored complete",
    "partial_documents_exact": "stored partial documents byte-equal to the one built from the acknowledged fragments "
                               "(so naming exactly the missing fragments and blocks) / stored partial",
    "unexpected_documents": "stored documents for no record, or for a record that should have given an incident",
    "duplicate_deliveries": "uploads the Web App answered 409 that no collector restart explains",
    "redelivered_after_restart": "uploads answered 409 because the document went out just before a kill -9",
    "incidents": "incidents the collector recorded",
    "incidents_for_lost_required": "expected incidents matched by a collector incident (device, msg_id) / expected",
    "spurious_incidents": "collector incidents matching no expected incident",
    "dead_letters": "documents the collector dead-lettered",
    "unsettled": "open messages plus documents still pending delivery after the drain",
    "latency_p50_s": "median of (Web App store time - arrival of the message's last acknowledged fragment), virtual s",
    "latency_p95_s": "95th percentile of the same",
    "latency_max_s": "maximum of the same",
    "end_to_end_p50_s": "median of (Web App store time - record creation at the device), virtual s",
    "end_to_end_p95_s": "95th percentile of the same",
    "end_to_end_max_s": "maximum of the same",
    **YIELD_MEASUREMENTS,
}


@dataclass
class Acked:
    """One fragment the collector acknowledged."""

    received_ms: int
    #: virtual time it reached the collector
    arrived: float


@dataclass
class Expected:
    record_id: int
    dev_eui: str
    msg_id: int
    #: "complete" | "partial" | "incident" | "none"
    kind: str
    key: str
    created_at: float
    xml: bytes | None = None
    missing_fragments: list[int] = field(default_factory=list)
    missing_blocks: list[str] = field(default_factory=list)
    #: arrival of the last acknowledged fragment (virtual s); None when none arrived
    last_arrival: float | None = None


@dataclass
class Upload:
    """One upload the Web App answered."""

    key: str | None
    status: int
    #: virtual time of the answer
    vtime: float
    xml: bytes | None = None
    #: how many times the collector had been (re)started when it was made (1 = first run)
    epoch: int = 1


@dataclass
class Observed:
    uploads: list[Upload] = field(default_factory=list)
    #: (DevEUI, msg_id, code) of every incident the collector recorded
    incidents: list[tuple[str, int, str]] = field(default_factory=list)
    open_messages: int = 0
    pending_documents: int = 0
    dead_letters: int = 0
    uplinks: int = 0
    uplinks_acked: int = 0
    uplinks_refused: int = 0
    ingest_errors: int = 0
    records: int = 0


def coverage(fragments: list[bytes], size: int, have: Iterable[int]) -> list[tuple[int, int]]:
    """Record byte ranges ``[start, end)`` carried by the fragments ``have``."""
    out = []
    for i in sorted(have):
        start = chunk_offset(i, size)
        out.append((start, start + len(fragments[i]) - (3 if i == 0 else 2)))
    return out


def _covered(ranges: list[tuple[int, int]], a: int, b: int) -> bool:
    pos = a
    for s, e in sorted(ranges):
        if s > pos:
            return False
        pos = max(pos, e)
        if pos >= b:
            return True
    return pos >= b


def expected_outcome(*, record_id: int, dev_eui: str, msg_id: int, record: bytes, fragments: list[bytes],
                     size: int, created_at: float, acked: dict[int, Acked], need: int | None = None) -> Expected:
    """What the collector must make of a record of which ``acked`` arrived.

    ``need`` is None for wire format v1 (every fragment 0..count-1 is needed). For
    v2 it is k, the record's data fragments (``fragments`` are those k): ``acked``
    may hold parity rows (index >= k), and any k distinct frames rebuild the record;
    with fewer, a partial document covers the data chunks held only."""
    rec = decode_record(record)
    key = idempotency_key(dev_eui, rec)
    out = Expected(record_id, dev_eui.upper(), msg_id, "none", key, created_at)
    if not acked:
        return out
    out.last_arrival = max(a.arrived for a in acked.values())
    count = len(fragments)
    if need is not None:
        # the message closes as soon as it holds k distinct frames: those make the document
        held = dict(list(acked.items())[:need])
        out.last_arrival = max(a.arrived for a in held.values())
        times = [a.received_ms for a in held.values()]
        first, last = min(times), max(times)
        if len(held) >= need:
            out.kind = "complete"
            out.xml = build_document(rec, out.dev_eui, Transport(msg_id, need, need, first, last), True)
            return out
        length = len(parse_v2(fragments[0]).chunk)
        have = [(i * length, i * length + len(parse_v2(fragments[i]).chunk)) for i in sorted(held) if i < need]
        return _partial(out, rec, have, count, held, Transport(msg_id, need, len(held), first, last))
    times = [a.received_ms for a in acked.values()]
    first, last = min(times), max(times)
    if len(acked) == count:
        out.kind = "complete"
        out.xml = build_document(rec, out.dev_eui, Transport(msg_id, count, count, first, last), True)
        return out
    if 0 not in acked:
        out.kind = "incident"
        return out
    return _partial(out, rec, coverage(fragments, size, acked), count, acked,
                    Transport(msg_id, count, len(acked), first, last))


def _partial(out: Expected, rec, have: list[tuple[int, int]], count: int, acked: dict[int, Acked],
             transport: Transport) -> Expected:
    """A partial document from the record byte ranges ``have``, or an incident when
    they miss part of the required section."""
    req = required_length(len(rec.channels), rec.sample_count)
    if not _covered(have, 0, req):
        out.kind = "incident"
        return out
    pos = req
    missing_blocks = []
    for name, bsize, block in zip(BLOCK_NAMES, BLOCK_SIZES, rec.blocks, strict=True):
        if block is None:
            continue
        if not _covered(have, pos, pos + bsize):
            missing_blocks.append(name)
        pos += bsize
    out.kind = "partial"
    out.missing_fragments = [i for i in range(count) if i not in acked]
    out.missing_blocks = missing_blocks
    partial = dataclasses.replace(rec, **{name: None for name in missing_blocks})
    out.xml = build_document(partial, out.dev_eui,
                             dataclasses.replace(transport, missing_fragments=out.missing_fragments,
                                                 missing_blocks=missing_blocks), False)
    return out


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) with linear interpolation; None for no values."""
    if not values:
        return None
    v = sorted(values)
    pos = (len(v) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def is_complete(xml: bytes) -> bool:
    try:
        root = etree.fromstring(xml, parser=etree.XMLParser(resolve_entities=False, no_network=True))
    except etree.XMLSyntaxError:
        return False
    return root.get("complete") == "true"


def _ratio(num: int, den: int) -> float | None:
    """``num / den``; None ("n/a") when there is nothing to measure: a ratio over no
    cases is not a success, and an expectation on it must not pass."""
    return num / den if den else None


def measure(expected: list[Expected], obs: Observed, fates: list[Fate] | None = None,
            wires: list[str] | None = None) -> tuple[dict[str, float | int | None], dict]:
    """The measurements of docs/scenarios.md, and details (latencies, mismatches).
    ``fates`` (one per record of ``expected``, same order) adds the yield measurements;
    without them every record is taken as sent, heard and delivered. ``wires`` (same
    order, "v1"/"v2"; default all v1) splits yield and airtime by wire format."""
    by_key: dict[str, Expected] = {}
    for e in expected:
        by_key.setdefault(e.key, e)
    due = {e.key: e for e in expected if e.kind in ("complete", "partial")}
    stored: dict[str, Upload] = {}
    for u in obs.uploads:
        if u.status == 201 and u.key is not None and u.key not in stored:
            stored[u.key] = u
    n_complete = n_partial = exact_complete = exact_partial = 0
    mismatches: list[dict] = []
    latencies: list[float] = []
    ages: list[float] = []
    for key, u in stored.items():
        e = by_key.get(key)
        complete = is_complete(u.xml or b"")
        if complete:
            n_complete += 1
        else:
            n_partial += 1
        ok = e is not None and e.xml is not None and e.xml == u.xml and (e.kind == "complete") == complete
        if ok:
            exact_complete += complete
            exact_partial += not complete
        elif len(mismatches) < 20:
            mismatches.append({"key": key, "expected": e.kind if e else "no such record",
                               "got": "complete" if complete else "partial"})
        if e is not None and e.last_arrival is not None:
            latencies.append(u.vtime - e.last_arrival)
            ages.append(u.vtime - e.created_at)
    delivered = sum(1 for k in due if k in stored)
    n_complete_due = sum(1 for e in due.values() if e.kind == "complete")
    exact_complete_due = sum(1 for k, e in due.items()
                             if e.kind == "complete" and k in stored and stored[k].xml == e.xml)
    unexpected = sum(1 for k in stored if k not in due)
    first_epoch = {k: u.epoch for k, u in stored.items()}
    dup = redelivered = 0
    for u in obs.uploads:
        if u.status != 409:
            continue
        s = stored.get(u.key or "")
        if s is not None and first_epoch[u.key or ""] < u.epoch and s.xml == u.xml:
            redelivered += 1
        else:
            dup += 1
    want_inc = Counter((e.dev_eui, e.msg_id) for e in expected if e.kind == "incident")
    have_inc = Counter((d.upper(), m) for d, m, _ in obs.incidents)
    matched = sum(min(n, have_inc[k]) for k, n in want_inc.items())
    values: dict[str, float | int | None] = {
        "records": obs.records or len(expected),
        "records_reached": sum(1 for e in expected if e.kind != "none"),
        "uplinks": obs.uplinks,
        "uplinks_acked": obs.uplinks_acked,
        "uplinks_refused": obs.uplinks_refused,
        "ingest_errors": obs.ingest_errors,
        "expected_documents": len(due),
        "expected_complete": sum(1 for e in due.values() if e.kind == "complete"),
        "expected_incidents": sum(want_inc.values()),
        "documents": len(stored),
        "documents_complete": n_complete,
        "documents_partial": n_partial,
        "delivered_ratio": _ratio(delivered, len(due)),
        "missing_documents": len(due) - delivered,
        "complete_delivered_ratio": _ratio(exact_complete_due, n_complete_due),
        "complete_documents_exact": _ratio(exact_complete, n_complete),
        "partial_documents_exact": _ratio(exact_partial, n_partial),
        "unexpected_documents": unexpected,
        "duplicate_deliveries": dup,
        "redelivered_after_restart": redelivered,
        "incidents": len(obs.incidents),
        "incidents_for_lost_required": _ratio(matched, sum(want_inc.values())),
        "spurious_incidents": len(obs.incidents) - matched,
        "dead_letters": obs.dead_letters,
        "unsettled": obs.open_messages + obs.pending_documents,
        "latency_p50_s": percentile(latencies, 0.5),
        "latency_p95_s": percentile(latencies, 0.95),
        "latency_max_s": max(latencies) if latencies else None,
        "end_to_end_p50_s": percentile(ages, 0.5),
        "end_to_end_p95_s": percentile(ages, 0.95),
        "end_to_end_max_s": max(ages) if ages else None,
    }
    if fates is None:
        fates = [Fate(1, None, None, None, frozenset()) for _ in expected]
    yielded = [e.kind == "complete" and e.key in stored and stored[e.key].xml == e.xml for e in expected]
    got = [e.kind in ("complete", "partial") and e.key in stored for e in expected]
    values.update(yield_values(fates, yielded, got))
    values.update(by_wire(wires or ["v1"] * len(expected), fates, yielded, got))
    # a device's last record of the run has no later uplink to carry a repeated answer
    last: dict[str, float] = {}
    for e in expected:
        last[e.dev_eui] = max(last.get(e.dev_eui, e.created_at), e.created_at)
    followed = [i for i, e in enumerate(expected) if e.created_at < last[e.dev_eui]]
    values["record_yield_followed"] = _ratio(sum(yielded[i] for i in followed), len(followed))
    missing = [k for k in due if k not in stored][:20]
    details = {"latencies_s": latencies, "end_to_end_s": ages, "mismatches": mismatches,
               "missing_documents": [{"key": k, "kind": due[k].kind, "devEui": due[k].dev_eui,
                                      "msgId": due[k].msg_id} for k in missing]}
    return values, details
