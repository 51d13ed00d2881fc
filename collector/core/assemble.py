"""Turn a closed message into its outcome: a document or an incident (sans-IO).

``docs/spec/wire-format.md`` §3: a complete message, or one closed early whose
required section arrived whole with a good CRC, becomes a document (``complete``
false and ``missingFragments``/``missingBlocks`` named when fragments are missing);
anything else becomes an incident that keeps everything that did arrive.

Wire format v2 (``wire-format-v2.md`` §5): a message holding k distinct fragments is
rebuilt through the erasure code and is complete (``fragmentsExpected`` = k,
``fragmentsReceived`` = the distinct fragments held, parity included); one closed
with fewer yields what its data chunks hold, under v1's rules for partial documents
and incidents, ``missingFragments`` naming the missing data chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from collector.core import fec
from collector.core.reassembly import Message
from collector.core.wire import (
    RecordError,
    RequiredMissing,
    WireError,
    chunk_offset,
    decode_partial,
    fragment_count,
)
from collector.core.xmldoc import Transport, build_document, idempotency_key, xsd_validate


@dataclass
class Outcome:
    kind: str  # "document" | "incident"
    uid: str
    dev_eui: str
    msg_id: int
    close_reason: str | None
    complete: bool = False
    xml: bytes | None = None
    idempotency_key: str | None = None
    #: the decoded record (documents only)
    record: object | None = None
    missing_fragments: list[int] = field(default_factory=list)
    missing_blocks: list[str] = field(default_factory=list)
    #: incident reason: a stable code and a sentence
    code: str | None = None
    detail: str | None = None
    fragments_expected: int | None = None
    #: what arrived (the held fragments, in index order)
    held: list = field(default_factory=list, repr=False)
    first_received_ms: int | None = None
    last_received_ms: int | None = None

    @property
    def fragments(self) -> list[dict]:
        """What arrived: index, arrival time and the uplink with its metadata."""
        return [h.to_dict() for h in self.held]

    @property
    def state(self) -> str:
        """``complete``, ``partial`` or ``incident``."""
        if self.kind == "incident":
            return "incident"
        return "complete" if self.complete else "partial"

    def to_dict(self, fragments: list[dict] | None = None) -> dict:
        """``fragments``: :attr:`fragments` when the caller has them already (the
        ``fragments`` of the message's ``to_dict()``: the same held fragments in index
        order), so they are not serialised twice."""
        return {
            "kind": self.kind,
            "state": self.state,
            "uid": self.uid,
            "devEui": self.dev_eui,
            "msgId": self.msg_id,
            "closeReason": self.close_reason,
            "complete": self.complete,
            "idempotencyKey": self.idempotency_key,
            "missingFragments": self.missing_fragments,
            "missingBlocks": self.missing_blocks,
            "code": self.code,
            "detail": self.detail,
            "fragmentsExpected": self.fragments_expected,
            "fragmentsReceived": len(self.held),
            "firstReceivedMs": self.first_received_ms,
            "lastReceivedMs": self.last_received_ms,
            "fragments": self.fragments if fragments is None else fragments,
        }


_CLOSE_WORDS = {
    "deadline": "its deadline passed",
    "conflict": "a conflicting fragment (msg_id reused) closed it",
    "evicted": "the device's open-message cap was reached",
    "complete": "all fragments arrived",
}


def _incident(out: Outcome, code: str, detail: str) -> Outcome:
    out.kind = "incident"
    out.code = code
    out.detail = detail
    return out


def assemble(msg: Message) -> Outcome:
    """Decode a closed message and build its document, or say why it cannot be built."""
    if msg.wire == 2:
        return _assemble_v2(msg)
    frags = msg.fragments
    out = Outcome("document", msg.uid, msg.dev_eui, msg.msg_id, msg.close_reason)
    order = sorted(frags)
    held = out.held = [frags[i] for i in order]
    if held:
        times = [h.uplink.received_ms for h in held]
        out.first_received_ms, out.last_received_ms = min(times), max(times)
    why = _CLOSE_WORDS.get(msg.close_reason or "", msg.close_reason or "closed")
    if not order or order[0] != 0:
        return _incident(out, "fragment0_missing",
                         f"fragment 0 never arrived before {why}: the required section and the fragment "
                         f"count are missing (fragments held: {', '.join(map(str, order)) or 'none'})")
    count = held[0].fragment.count or 0
    out.fragments_expected = count
    if order[-1] >= count:
        first = next(i for i in order if i >= count)
        return _incident(out, "index_beyond_count", f"fragment {first} held but fragment 0 says count {count}")
    size = len(held[0].payload) if count > 1 else None
    last = count - 1
    has_last = order[-1] == last
    if size is not None:
        lengths = [len(h.payload) for h in held]
        body = lengths[:-1] if has_last else lengths
        if body.count(size) < len(body) or (has_last and lengths[-1] > size):
            bad = [i for i, n in zip(order, body, strict=False) if n != size]
            i = bad[0] if bad else last
            return _incident(out, "length", f"fragment {i} is {len(frags[i].payload)} bytes; fragment 0 set S={size}")
    if len(held) == count:  # complete: the chunks in order are the record
        buf = b"".join([h.fragment.chunk for h in held])
        have = [(0, len(buf))]
    else:  # lay the chunks out at their record offsets
        ba = bytearray()
        have = []
        for i, h in zip(order, held, strict=True):
            start = chunk_offset(i, size) if size else 0
            chunk = h.fragment.chunk
            if len(ba) < start:
                ba.extend(bytes(start - len(ba)))
            ba[start : start + len(chunk)] = chunk
            have.append((start, start + len(chunk)))
        buf = bytes(ba)
    total = len(buf) if has_last else None
    out.missing_fragments = [] if len(held) == count else [i for i in range(count) if i not in frags]
    try:
        decoded = decode_partial(buf, have)
    except RequiredMissing as e:
        missing = ", ".join(map(str, out.missing_fragments))
        return _incident(out, "required_missing",
                         f"{e.detail}; closed because {why}; fragments missing: {missing}")
    except (RecordError, WireError) as e:
        return _incident(out, e.code, e.detail)
    expected = decoded.expected_len
    if size is not None:
        needs = fragment_count(expected, size)
        if needs != count:
            return _incident(out, "length",
                             f"the header announces a {expected}-byte record, which needs {needs} fragment(s) "
                             f"at S={size}, but fragment 0 says count {count}")
    if total is not None and total != expected:
        return _incident(out, "length",
                         f"the fragments carry {total} record bytes but the header announces {expected}")
    return _document(out, msg, decoded, count, len(frags))


def _document(out: Outcome, msg: Message, decoded, expected: int, received: int) -> Outcome:
    """The decoded record's document, the same for v1 and v2: ``expected`` is the
    fragments the message needs (v1's count, v2's k), ``received`` those it holds."""
    rec = decoded.record
    out.record = rec
    out.complete = not out.missing_fragments
    out.missing_blocks = decoded.missing_blocks
    out.idempotency_key = idempotency_key(msg.dev_eui, rec)
    transport = Transport(msg.msg_id, expected, received, out.first_received_ms or 0, out.last_received_ms or 0,
                          out.missing_fragments, out.missing_blocks)
    out.xml = build_document(rec, msg.dev_eui, transport, out.complete)
    return out


def reject_invalid(out: Outcome) -> Outcome:
    """``out``, or - when its document does not validate against the shipped XSD - an
    incident that says why (the Web App would refuse the document on every attempt,
    so it is never stored for delivery)."""
    if out.xml is None:
        return out
    errors = xsd_validate(out.xml)
    if not errors:
        return out
    out.xml = None
    out.idempotency_key = None
    return _incident(out, "invalid_document", "the document fails the XSD: " + "; ".join(errors[:3]))


def _assemble_v2(msg: Message) -> Outcome:
    frags = msg.fragments
    out = Outcome("document", msg.uid, msg.dev_eui, msg.msg_id, msg.close_reason)
    order = sorted(frags)
    held = out.held = [frags[i] for i in order]
    if held:
        times = [h.uplink.received_ms for h in held]
        out.first_received_ms, out.last_received_ms = min(times), max(times)
    why = _CLOSE_WORDS.get(msg.close_reason or "", msg.close_reason or "closed")
    if not held:
        return _incident(out, "fragment0_missing", f"no fragment arrived before {why}")
    head = held[0].fragment
    k, pad, length = head.k, head.pad, head.chunk_len
    record_len = k * length - pad
    out.fragments_expected = k
    if len(held) >= k:
        buf = fec.rebuild_joined(k, {h.index: h.fragment.chunk for h in held})[:record_len]
        have = [(0, record_len)]
    else:
        ba = bytearray(k * length)
        have = []
        for h in held:
            if h.index < k:
                start = h.index * length
                chunk = h.fragment.chunk
                ba[start : start + len(chunk)] = chunk
                have.append((start, start + len(chunk)))
        buf = bytes(ba[:record_len])
        out.missing_fragments = msg.missing()
    try:
        decoded = decode_partial(buf, have)
    except RequiredMissing as e:
        missing = ", ".join(map(str, out.missing_fragments))
        return _incident(out, "required_missing",
                         f"{e.detail}; closed because {why} with {len(held)} of the {k} fragments a rebuild "
                         f"needs; data chunks missing: {missing}")
    except (RecordError, WireError) as e:
        return _incident(out, e.code, e.detail)
    if decoded.expected_len != record_len:
        return _incident(out, "length", f"the header announces a {decoded.expected_len}-byte record but k={k}, "
                                        f"S={head.size} and pad={pad} make {record_len}")
    return _document(out, msg, decoded, k, len(frags))
