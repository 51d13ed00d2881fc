"""The reassembly state machine (sans-IO).

Fed uplinks and the current time, it holds the fragments of each message until all
have arrived or the message's deadline passes, and says what happened. It never
reads a clock and never does I/O; its state is plain data (see
:meth:`Message.to_dict`) so the service can persist it and restore it after a
restart. The rules are those of ``docs/spec/wire-format.md`` §3; the choices the
spec leaves open are written down in ``docs/reassembly.md``.

Wire format v2 (FPort 17, ``docs/spec/wire-format-v2.md`` §5) lives beside v1 with
v1's rules untouched: a v2 message is rebuilt (closed ``complete``) as soon as it
holds k distinct fragments with consistent ``k``/``pad``/``S``; a poll is an event
(:class:`PollEvent`) that says how many fragments are held, so the service can answer
ACK or NEED, and it moves the deadline later to cover the repair round it starts.
Under the adaptive policy an open v2 message is also *held* past that deadline while
the device can still send for it (``docs/repair.md``, "The deadline follows the
repair state"): until ``repair_keep`` newer msg_ids of the device were seen, or the
caller says the collector will ask for nothing more (:meth:`Reassembler.release`),
at most ``repair_hold`` after its first fragment. The v2 specifics are in
:mod:`collector.core.reassembly2`. A message knows its wire version from its
fragments' FPort, so the persisted state is v1's.

This module is over 400 lines: the state machine of both versions is kept in one
class so that the duplicate, conflict and cap rules are shared, not copied.
"""

from __future__ import annotations

import functools
import heapq
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from collector.core import lorawan, reassembly2, wire2
from collector.core.reassembly2 import PollEvent
from collector.core.uplink import Uplink
from collector.core.wire import (
    FPORT,
    MAX_FRAGMENTS,
    MIN_SIZE,
    Fragment,
    FragmentError,
    fragment_count,
    parse_fragment,
    record_length,
)

CloseReason = Literal["complete", "deadline", "conflict", "evicted"]

#: v2 messages are keyed apart from v1 ones: the FPort says which wire format a
#: fragment is, so a v2 message never contradicts a v1 message with the same msg_id
V2_KEYS = 256


def _key(dev_eui: str, msg_id: int, wire: int) -> tuple[str, int]:
    return (dev_eui, msg_id + V2_KEYS if wire == 2 else msg_id)

__all__ = ["FeedResult", "Held", "Message", "PollEvent", "Reassembler", "Recent", "Settings"]


@dataclass
class Settings:
    #: seconds a message is held at least (``fixed``: exactly) after its first fragment
    message_timeout: float = 900.0
    #: ``fixed`` or ``adaptive`` (allow for the data rate and the duty cycle)
    deadline_policy: str = "adaptive"
    #: region assumed when an uplink does not say
    default_region: str = "EU868"
    #: adaptive deadline: this many times the shortest time the message can take to send
    adaptive_margin: float = 1.5
    #: how long a closed message's fragments are remembered to recognise duplicates
    #: (v2: longer while its device may still send its repair rows, see ``recall``)
    duplicate_window: float = 3600.0
    max_open_per_device: int = 32
    max_open_total: int = 50_000
    #: closed messages remembered for duplicates at most (oldest forgotten first;
    #: None: as many as ``max_open_total``), so a flood cannot grow memory for an hour
    max_recent: int | None = None
    #: v1's FPort (wire format v2 is always on FPort 17, ``wire2.FPORT_V2``)
    fport: int = FPORT
    #: v2: polls that start a repair round move a message's deadline later at most this
    #: many times (the first poll and the device's NEED rounds, 3 by default)
    repair_extensions: int = 4
    #: v2, adaptive policy: an open message is held while the device may still send
    #: for it (its repair rows), at most this many seconds after its first fragment
    repair_hold: float = 21600.0
    #: v2: the messages a device keeps for repair (spec section 4): a held message is
    #: released once this many newer msg_ids of its device were seen
    repair_keep: int = 4

    def __post_init__(self) -> None:
        if self.fport == wire2.FPORT_V2:
            raise ValueError(f"fport {self.fport} is the v2 port; v1 and v2 need different FPorts")
        if self.deadline_policy not in ("fixed", "adaptive"):
            raise ValueError(f"deadline_policy must be 'fixed' or 'adaptive', not {self.deadline_policy!r}")
        if self.message_timeout <= 0:
            raise ValueError("message_timeout must be positive")
        if self.repair_hold < 0:
            raise ValueError("repair_hold must not be negative")
        if not 1 <= self.repair_keep < 128:
            raise ValueError("repair_keep must be in 1..127")
        lorawan.region(self.default_region)

    @property
    def recall(self) -> float:
        """Seconds a closed message is remembered at most: the duplicate window, and
        for a v2 message up to ``repair_hold`` while its device may still send for it
        (what a restart must load back)."""
        return max(self.duplicate_window, self.repair_hold)


@dataclass(slots=True, init=False)
class Held:
    index: int
    #: the whole uplink payload (fragment header included)
    payload: bytes
    uplink: Uplink
    #: collector time of arrival
    arrived: float
    #: the parsed fragment (derived from ``payload``; parsed here when not given):
    #: v2 when the uplink came on FPort 17
    fragment: Fragment | wire2.V2Fragment

    # written out rather than generated with a __post_init__: one is made per fragment,
    # and the extra call doubled the cost
    def __init__(self, index: int, payload: bytes, uplink: Uplink, arrived: float,
                 fragment: Fragment | wire2.V2Fragment | None = None) -> None:
        self.index = index
        self.payload = payload
        self.uplink = uplink
        self.arrived = arrived
        if fragment is None:
            fragment = reassembly2.parse_held(payload) if uplink.fport == wire2.FPORT_V2 else parse_fragment(payload)
        self.fragment = fragment

    def to_dict(self) -> dict:
        return {"index": self.index, "arrived": self.arrived, "uplink": self.uplink.to_dict()}

    @classmethod
    def from_dict(cls, d: dict) -> Held:
        up = Uplink.from_dict(d["uplink"])
        return cls(d["index"], up.payload, up, d["arrived"])


@dataclass
class Message:
    uid: str
    dev_eui: str
    msg_id: int
    #: collector time the first fragment arrived
    opened: float
    deadline: float
    fragments: dict[int, Held] = field(default_factory=dict)
    #: fragment count, known once fragment 0 arrived
    count: int | None = None
    #: fragment size S (header included), known from any fragment that is not the last
    size: int | None = None
    closed: float | None = None
    close_reason: CloseReason | None = None
    #: highest index held
    max_index: int = -1
    #: index of a held fragment shorter than S (it must be the last), if any
    short: int | None = None
    #: what the deadline was last computed from (not state: recomputed as needed)
    basis: tuple | None = field(default=None, repr=False, compare=False)
    #: wire format: 1, or 2 (then ``count`` is k; derived from the fragments' FPort)
    wire: int = 1
    #: v2 only: the fragments' pad, and the repair picture (not persisted: polls after a
    #: restart start it again, bounded by ``Settings.repair_extensions``)
    pad: int | None = None
    polls: int = field(default=0, compare=False)
    last_sent: int = field(default=-1, compare=False)
    extensions: int = field(default=0, compare=False)
    #: v2, adaptive: held open for its repair until at most this time (None: not
    #: held); persisted, like ``released``
    hold: float | None = None
    #: v2: the hold was released (the device can no longer send its rows, or the
    #: collector asks for none): the message closes at ``deadline`` and is not held again
    released: bool = False

    @property
    def closes(self) -> float:
        """When the message closes unless it completes first: its deadline, or later
        while it is held for its repair."""
        return self.deadline if self.hold is None or self.hold < self.deadline else self.hold

    @property
    def complete(self) -> bool:
        """v1: every fragment arrived; v2: k distinct fragments (the record is rebuilt)."""
        if self.wire == 2:
            return self.count is not None and len(self.fragments) >= self.count
        return self.count is not None and len(self.fragments) == self.count

    def missing(self) -> list[int]:
        """Indices known to be missing (all below ``count``; below the highest held
        index when the count is unknown). v2: the data chunks not held."""
        if self.wire == 2:
            return [i for i in range(self.count or 0) if i not in self.fragments]
        top = self.count if self.count is not None else (max(self.fragments) + 1 if self.fragments else 0)
        return [i for i in range(top) if i not in self.fragments]

    def to_dict(self) -> dict:
        return {
            "uid": self.uid,
            "dev_eui": self.dev_eui,
            "msg_id": self.msg_id,
            "opened": self.opened,
            "deadline": self.deadline,
            "count": self.count,
            "size": self.size,
            "closed": self.closed,
            "close_reason": self.close_reason,
            "wire": self.wire,
            "hold": self.hold,
            "released": self.released,
            "fragments": [h.to_dict() for _, h in sorted(self.fragments.items())],
        }

    @classmethod
    def from_dict(cls, d: dict) -> Message:
        m = cls(d["uid"], d["dev_eui"], d["msg_id"], d["opened"], d["deadline"], count=d["count"],
                size=d["size"], closed=d["closed"], close_reason=d["close_reason"],
                hold=d.get("hold"), released=d.get("released", False))
        for hd in d["fragments"]:
            h = Held.from_dict(hd)
            m.fragments[h.index] = h
            m.max_index = max(m.max_index, h.index)
            if isinstance(h.fragment, wire2.V2Fragment):
                m.wire, m.pad = 2, h.fragment.pad
        if m.wire == 2:
            m.short = None
        elif m.size is not None:
            m.short = next((i for i, h in m.fragments.items() if len(h.payload) < m.size), None)
        return m


@dataclass(slots=True)
class Recent:
    """What is remembered of a closed message to recognise late duplicates: its id,
    when it closed, and the payload of each fragment it held (the same bytes objects
    the uplinks carried, so remembering them copies nothing)."""

    uid: str
    dev_eui: str
    msg_id: int
    closed: float
    close_reason: str | None
    payloads: dict[int, bytes]
    #: v2 only: the rebuilt message (header fragment and data chunks), computed the
    #: first time a fragment arrives after the rebuild; False: cannot be rebuilt
    rebuilt: tuple | bool | None = None
    #: the message's wire format (v1 and v2 messages are keyed apart)
    wire: int = 1

    @classmethod
    def of(cls, m: Message) -> Recent:
        return cls(m.uid, m.dev_eui, m.msg_id, m.closed or 0.0, m.close_reason,
                   {i: h.payload for i, h in m.fragments.items()}, wire=m.wire)

    def v2_expected(self, frag: wire2.V2Fragment) -> bytes | None:
        """v2: the payload the device sends for ``frag.index`` of this (rebuilt)
        message, or None when it is no rebuilt v2 message with ``frag``'s header."""
        if self.rebuilt is None:
            self.rebuilt = (self.close_reason == "complete" and reassembly2.rebuilt_chunks(self.payloads)) or False
        if not self.rebuilt:
            return None
        head, chunks = self.rebuilt
        if reassembly2.conflict(head.k, head.pad, head.size, frag):
            return None
        return reassembly2.expected_payload(head, chunks, frag.index)

    def to_dict(self) -> dict:
        return {"uid": self.uid, "dev_eui": self.dev_eui, "msg_id": self.msg_id, "closed": self.closed,
                "close_reason": self.close_reason, "recent": True, "wire": self.wire,
                "payloads": {str(i): p.hex() for i, p in self.payloads.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> Recent:
        if not d.get("recent"):
            return cls.of(Message.from_dict(d))
        return cls(d["uid"], d["dev_eui"], d["msg_id"], d["closed"], d["close_reason"],
                   {int(i): bytes.fromhex(p) for i, p in d["payloads"].items()}, wire=d.get("wire", 1))


@dataclass
class FeedResult:
    #: ``poll``: a v2 poll, stored as nothing; ``poll`` says what is held
    status: Literal["accepted", "duplicate", "ignored", "poll"]
    #: why an uplink was ignored
    reason: str | None = None
    #: the message the fragment now belongs to, or the closed one it duplicates
    message: Message | Recent | None = None
    #: messages closed by this uplink: completed, or closed by a conflict or the caps
    closed: list[Message] = field(default_factory=list)
    poll: PollEvent | None = None
    #: other open messages of the device whose hold this uplink released (their new
    #: deadline is state to commit with the uplink)
    released: list[Message] = field(default_factory=list)


def _fits(m: Message, frag: Fragment, length: int) -> tuple[bool, int | None]:
    """Whether ``frag`` (of total ``length``, index not held yet) can belong to ``m``,
    and the fragment size S the message has with it. Constant time: all fragments
    held but the last have length S, and at most one held fragment is shorter."""
    count = m.count if m.count is not None else frag.count
    top = m.max_index if m.max_index > frag.index else frag.index
    if count is not None and top >= count:
        return False, None
    s = m.size
    if s is None:
        # at most one fragment is held, and it may be the last one
        if not m.fragments:
            return True, None
        (h,) = m.fragments.values()
        held_len = len(h.payload)
        if frag.index > h.index:
            return length <= held_len, held_len
        return held_len <= length, length
    if length > s:
        return False, s
    if length < s:  # only the last fragment may be short
        if count is not None and frag.index != count - 1:
            return False, s
        if frag.index < top or (m.short is not None and m.short != frag.index):
            return False, s
    elif m.short is not None and frag.index > m.short:
        return False, s
    if frag.index == 0 and m.short is not None and m.short != (frag.count or 0) - 1:
        return False, s
    return True, s


#: the longest schema-1 record: 4 channels of 255 samples and every optional block
LARGEST_RECORD = record_length(4, 255, 0x0F)


@functools.cache  # size is a fragment size or a data rate's max payload: a handful of values
def _largest_count(size: int) -> int:
    # a message whose fragments imply S < 4 is invalid (assembly says so); for its
    # deadline it is treated as the smallest valid size
    return min(MAX_FRAGMENTS, fragment_count(LARGEST_RECORD, max(size, MIN_SIZE)))


class Reassembler:
    """Holds open messages per (device, msg_id) and closes them by count or deadline."""

    def __init__(self, settings: Settings | None = None):
        self.settings = settings or Settings()
        #: in opening order (OrderedDict: taking the oldest is O(1) however many are open)
        self._open: OrderedDict[tuple[str, int], Message] = OrderedDict()
        #: closed messages in closing order, remembered for the duplicate window
        self._recent: OrderedDict[tuple[str, int], Recent] = OrderedDict()
        self._per_device: dict[str, int] = {}
        self._heap: list[tuple[float, str, tuple[str, int]]] = []
        self.next_seq = 1
        self._radio_cache: dict = {}
        self._duration_cache: dict = {}
        #: fragment count of each device's latest fragment 0 (bounded, oldest dropped)
        self._last_count: OrderedDict[str, int] = OrderedDict()
        #: v2: each device's newest msg_id seen, and the msg_ids of its held messages
        self._newest: dict[str, int] = {}
        self._holding: dict[str, set[int]] = {}

    # ------------------------------------------------------------------ queries

    def open_messages(self) -> list[Message]:
        return list(self._open.values())

    def open_count(self, dev_eui: str | None = None) -> int:
        """Open messages of one device (all devices when None), without a scan."""
        return len(self._open) if dev_eui is None else self._per_device.get(dev_eui, 0)

    def recent_messages(self) -> list[Recent]:
        """Closed messages still remembered for duplicate detection."""
        return list(self._recent.values())

    def next_deadline(self) -> float | None:
        while self._heap:
            deadline, uid, key = self._heap[0]
            m = self._open.get(key)
            if m is not None and m.uid == uid and m.closes == deadline:
                return deadline
            heapq.heappop(self._heap)
        return None

    # ------------------------------------------------------------------ state

    def load(self, messages: list[dict], next_seq: int) -> None:
        """Restore open and recently closed messages (as :meth:`Message.to_dict` gave
        them) after a restart."""
        self.next_seq = max(self.next_seq, next_seq)
        recent: dict[tuple[str, int], Recent] = dict(self._recent)
        for d in sorted((d for d in messages if d.get("closed") is None), key=lambda d: d["opened"]):
            m = Message.from_dict(d)  # open ones in opening order
            self._add_open(_key(m.dev_eui, m.msg_id, m.wire), m)
            if m.wire == 2:
                self._see_v2(m.dev_eui, m.msg_id)
                if m.hold is not None:
                    self._holding.setdefault(m.dev_eui, set()).add(m.msg_id)
        for d in messages:
            if d.get("closed") is not None:
                r = Recent.from_dict(d)
                if r.wire == 2:
                    self._see_v2(r.dev_eui, r.msg_id)
                key = _key(r.dev_eui, r.msg_id, r.wire)
                old = recent.get(key)
                if old is None or old.closed <= r.closed:
                    recent[key] = r
        cap = self.settings.max_recent or self.settings.max_open_total
        # keep the newest, in closing order
        self._recent = OrderedDict(sorted(recent.items(), key=lambda kv: kv[1].closed)[-cap:])

    def reload(self, messages: list[dict], next_seq: int) -> None:
        """Replace the whole state with ``messages`` (as :meth:`load` takes them): the
        service's way back to what its store committed after a failed write."""
        settings = self.settings
        self.__init__(settings)  # type: ignore[misc] - every field back to empty, whatever fields there are
        self.load(messages, next_seq)

    def _add_open(self, key: tuple[str, int], m: Message) -> None:
        self._open[key] = m
        self._per_device[m.dev_eui] = self._per_device.get(m.dev_eui, 0) + 1
        heapq.heappush(self._heap, (m.closes, m.uid, key))

    def _close(self, key: tuple[str, int], now: float, reason: CloseReason) -> Message:
        m = self._open.pop(key)
        n = self._per_device[m.dev_eui] - 1
        if n:
            self._per_device[m.dev_eui] = n
        else:
            del self._per_device[m.dev_eui]
        m.closed = now
        m.close_reason = reason
        if m.hold is not None:
            self._unhold(m)
        self._recent.pop(key, None)  # re-insert last: the dict stays in closing order
        self._recent[key] = Recent.of(m)
        if len(self._recent) > (self.settings.max_recent or self.settings.max_open_total):
            self._recent.popitem(last=False)
        return m

    # ------------------------------------------------------------------ deadlines

    def _radio(self, region_name: str | None, data_rate: str | None, freq: int | None):
        """(data rate, duty cycle) an uplink's metadata implies; cached (bounded)."""
        key = (region_name, data_rate, freq)
        hit = self._radio_cache.get(key)
        if hit is not None:
            return hit
        region = lorawan.REGIONS.get(region_name or "") or lorawan.region(self.settings.default_region)
        dr = None
        if data_rate:
            try:
                dr = region.dr_for(*lorawan.parse_data_rate_name(data_rate))
            except ValueError:
                dr = None
        if dr is None:  # unknown: assume the slowest data rate of the region
            dr = min(region.data_rates, key=lambda d: d.bw_hz / 2**d.sf)
        if len(self._radio_cache) >= 1024:
            self._radio_cache.clear()
        hit = self._radio_cache[key] = (dr, region.duty_cycle(freq))
        return hit

    def _reschedule(self, key: tuple[str, int], m: Message, up: Uplink) -> None:
        """Move the deadline later when what it depends on changed."""
        s = self.settings
        if s.deadline_policy == "fixed":
            d = m.opened + s.message_timeout
        else:
            radio = self._radio_cache.get((up.region, up.data_rate, up.frequency_hz))  # the usual case: a hit
            dr, dc = radio or self._radio(up.region, up.data_rate, up.frequency_hz)
            size = m.size or dr.max_payload
            if m.wire == 2:
                n = reassembly2.deadline_fragments(m.count or 1, m.max_index)
            elif m.count is not None:
                n = m.count
            elif m.short is not None:  # the short fragment is the last one
                n = m.short + 1
            else:  # fragment 0 not seen yet: as many as the device's last message had,
                # or as the largest record needs; and more than the highest index held
                n = max(m.max_index + 2, self._last_count.get(m.dev_eui) or _largest_count(size))
            basis = (dr, n, size, dc)
            if basis == m.basis:
                return
            m.basis = basis
            expected = self._duration_cache.get(basis)
            if expected is None:
                if len(self._duration_cache) >= 4096:
                    self._duration_cache.clear()
                expected = self._duration_cache[basis] = lorawan.min_message_duration(*basis)
            d = m.opened + max(s.message_timeout, s.adaptive_margin * expected)
        if d > m.deadline:
            m.deadline = d
            heapq.heappush(self._heap, (m.closes, m.uid, key))

    def expire(self, now: float) -> list[Message]:
        """Close every open message whose deadline is at or before ``now``, and forget
        closed messages older than the duplicate window."""
        out = []
        while True:
            d = self.next_deadline()
            if d is None or d > now:
                break
            _, _, key = heapq.heappop(self._heap)
            out.append(self._close(key, now, "deadline"))
        horizon = now - self.settings.duplicate_window
        recent = self._recent
        while recent:  # in closing order: the stale ones are at the front
            key, r = next(iter(recent.items()))
            if r.closed >= horizon or (r.wire == 2 and self._remembered(r, now)):
                break  # (a v2 message kept for its repair rows keeps those behind it a while)
            del recent[key]
        return out

    def _remembered(self, r: Recent, now: float, moved_on: bool = False) -> bool:
        """Whether the closed message ``r`` still counts: its duplicates change nothing
        and a poll for it is answered as closed. v1: for ``duplicate_window`` after it
        closed. v2: also longer, while its device may still send for it (a rebuilt
        message whose ACK was lost is still held by the device, which polls for it
        again and sends the rows a NEED asks for), as a held message is: until ``repair_keep``
        newer msg_ids of the device were seen, at most ``repair_hold`` after it closed.
        A late poll is then answered ACK, not NEED, and a late row matches the rebuilt
        record and is a duplicate, instead of opening a message that a second rebuild
        delivers twice.

        ``moved_on``: a newer message with the same msg_id is open, so the device no
        longer sends for this one and only ``duplicate_window`` applies (a record
        repeats whole chunks of the one before, e.g. a channel that reads the same for
        hours: after the window they are the new message's)."""
        s = self.settings
        age = now - r.closed
        if age <= s.duplicate_window:
            return True
        if moved_on or r.wire != 2 or age > s.repair_hold:
            return False
        newest = self._newest.get(r.dev_eui)
        return newest is not None and wire2.behind(newest, r.msg_id) < s.repair_keep

    # ------------------------------------------------------------------ feeding

    def feed(self, up: Uplink, now: float) -> FeedResult:
        """Take one uplink. Raises :class:`collector.core.wire.FragmentError` when its
        payload is not a valid fragment."""
        if up.fport != self.settings.fport:
            if up.fport == wire2.FPORT_V2:
                return self._feed_v2(up, now)
            return FeedResult("ignored", reason=f"fPort {up.fport} is not the fragment port {self.settings.fport}")
        frag = parse_fragment(up.payload)
        key = (up.dev_eui, frag.msg_id)
        closed: list[Message] = []
        m = self._open.get(key)
        held = m.fragments.get(frag.index) if m is not None else None
        if held is not None and held.payload == up.payload:
            return FeedResult("duplicate", message=m)
        r = self._recent.get(key)
        if (r is not None and r.closed >= now - self.settings.duplicate_window
                and r.payloads.get(frag.index) == up.payload):
            return FeedResult("duplicate", message=r)
        if m is not None:
            if held is None and m.wire == 1:
                fits, size = _fits(m, frag, len(up.payload))
                if fits:
                    return self._add(key, m, frag, up, now, closed, size)
            # a different fragment for an index already held, or one that cannot
            # belong to this message: the device restarted or wrapped its msg_id
            closed.append(self._close(key, now, "conflict"))
        closed.extend(self._make_room(up.dev_eui, now))
        m = Message(f"{up.dev_eui}-{frag.msg_id}-{self.next_seq}", up.dev_eui, frag.msg_id, now, now)
        self.next_seq += 1
        self._add_open(key, m)
        return self._add(key, m, frag, up, now, closed, None)

    def _make_room(self, dev_eui: str, now: float) -> list[Message]:
        out = []
        s = self.settings
        if self._per_device.get(dev_eui, 0) >= s.max_open_per_device:
            # msg_id is one byte: look at the device's at most 256 keys, not at every open message
            mine = (m for i in range(2 * V2_KEYS) if (m := self._open.get((dev_eui, i))) is not None)
            oldest = min(mine, key=lambda m: m.opened)
            out.append(self._close(_key(oldest.dev_eui, oldest.msg_id, oldest.wire), now, "evicted"))
        if len(self._open) >= s.max_open_total:
            oldest = next(iter(self._open.values()))  # the first opened
            out.append(self._close(_key(oldest.dev_eui, oldest.msg_id, oldest.wire), now, "evicted"))
        return out

    def _add(self, key, m: Message, frag: Fragment, up: Uplink, now: float, closed: list[Message],
             size: int | None) -> FeedResult:
        m.fragments[frag.index] = Held(frag.index, up.payload, up, now, frag)
        if frag.index == 0:
            m.count = frag.count
            last = self._last_count
            last.pop(m.dev_eui, None)
            last[m.dev_eui] = frag.count or 1
            if len(last) > self.settings.max_open_total:
                last.popitem(last=False)
        if frag.index > m.max_index:
            m.max_index = frag.index
        m.size = size
        if size is not None and m.short is None:
            top = m.fragments[m.max_index]
            if len(top.payload) < size:
                m.short = m.max_index
        if m.count is not None and len(m.fragments) == m.count:  # m.complete, inlined (per fragment)
            closed.append(self._close(key, now, "complete"))
        else:
            self._reschedule(key, m, up)
        return FeedResult("accepted", message=m, closed=closed)

    # ------------------------------------------------------------------ wire format v2

    def _feed_v2(self, up: Uplink, now: float) -> FeedResult:
        frag = wire2.parse_v2(up.payload)
        newest = self._newest.get(up.dev_eui)  # inlined from _see_v2 (per fragment): the usual case is no change
        released = [] if newest == frag.msg_id else self._see_v2(up.dev_eui, frag.msg_id)
        if isinstance(frag, wire2.V2Poll):
            res = self._poll(up, frag, now)
        else:
            res = self._fragment_v2(up, frag, now)
        if released:
            res.released = [m for m in released if m.closed is None and m is not res.message]
        return res

    def _fragment_v2(self, up: Uplink, frag: wire2.V2Fragment, now: float) -> FeedResult:
        key = (up.dev_eui, frag.msg_id + V2_KEYS)
        closed: list[Message] = []
        m = self._open.get(key)
        held = m.fragments.get(frag.index) if m is not None else None
        if held is not None and held.payload == up.payload:
            return FeedResult("duplicate", message=m)
        r = self._recent.get(key)
        if r is not None and self._remembered(r, now, moved_on=m is not None) and (
                r.payloads.get(frag.index) == up.payload
                or (m is None and frag.index not in r.payloads and r.v2_expected(frag) == up.payload)):
            # the same bytes again, or a fragment the rebuilt message did not need
            # (checked against the record: a new message reusing the msg_id differs)
            return FeedResult("duplicate", message=r)
        if m is not None:
            # same k, pad and S (reassembly2.conflict says which differs; inlined: per fragment)
            if held is None and m.wire == 2 and frag.k == m.count and frag.pad == m.pad and frag.size == m.size:
                return self._add_v2(key, m, frag, up, now, closed)
            closed.append(self._close(key, now, "conflict"))
        closed.extend(self._make_room(up.dev_eui, now))
        m = Message(f"{up.dev_eui}-{frag.msg_id}-{self.next_seq}", up.dev_eui, frag.msg_id, now, now,
                    count=frag.k, size=frag.size, wire=2, pad=frag.pad)
        self.next_seq += 1
        if self.settings.deadline_policy == "adaptive":
            if wire2.behind(self._newest[up.dev_eui], frag.msg_id) < self.settings.repair_keep:
                # held while the device may still send for it (its repair rows)
                m.hold = now + self.settings.repair_hold
                self._holding.setdefault(up.dev_eui, set()).add(frag.msg_id)
            else:  # a late fragment of a message the device no longer keeps
                m.released = True
        self._add_open(key, m)
        return self._add_v2(key, m, frag, up, now, closed)

    def _add_v2(self, key, m: Message, frag: wire2.V2Fragment, up: Uplink, now: float,
                closed: list[Message]) -> FeedResult:
        m.fragments[frag.index] = Held(frag.index, up.payload, up, now, frag)
        if frag.index > m.max_index:
            m.max_index = frag.index
        if len(m.fragments) >= frag.k:  # any k distinct fragments: rebuilt
            closed.append(self._close(key, now, "complete"))
        else:
            self._reschedule(key, m, up)
        return FeedResult("accepted", message=m, closed=closed)

    def _poll(self, up: Uplink, p: wire2.V2Poll, now: float) -> FeedResult:
        """A poll: say what is held; an open message that needs a repair round gets
        the time for it (the first poll, and each poll after the device sent more)."""
        key = (up.dev_eui, p.msg_id + V2_KEYS)
        m = self._open.get(key)
        if m is not None and m.wire == 2 and m.count == p.k:
            extended = False
            if (m.polls == 0 or p.sent > m.last_sent) and m.extensions < self.settings.repair_extensions:
                extended = self._extend_for_repair(key, m, up, now, p.k - len(m.fragments))
            m.polls += 1
            m.last_sent = max(m.last_sent, p.sent)
            ev = PollEvent(p.msg_id, p.k, p.sent, len(m.fragments), False, False, m.uid, extended)
            return FeedResult("poll", message=m, poll=ev)
        r = self._recent.get(key)
        if (m is None and r is not None and self._remembered(r, now)
                and r.payloads and (head := self._v2_head(r)) is not None and head.k == p.k):
            ev = PollEvent(p.msg_id, p.k, p.sent, len(r.payloads), r.close_reason == "complete", True, r.uid)
            return FeedResult("poll", message=r, poll=ev)
        return FeedResult("poll", poll=PollEvent(p.msg_id, p.k, p.sent, 0, False, False))

    @staticmethod
    def _v2_head(r: Recent) -> wire2.V2Fragment | None:
        try:
            return reassembly2.parse_held(next(iter(r.payloads.values())))
        except FragmentError:
            return None

    def _extend_for_repair(self, key, m: Message, up: Uplink, now: float, need: int) -> bool:
        s = self.settings
        if s.deadline_policy == "fixed":
            span = s.message_timeout
        else:
            dr, dc = self._radio(up.region, up.data_rate, up.frequency_hz)
            uplinks = max(need, 1) + reassembly2.ROUND_EXTRA
            span = max(s.message_timeout,
                       s.adaptive_margin * lorawan.min_message_duration(dr, uplinks, m.size or dr.max_payload, dc))
        m.extensions += 1
        if now + span <= m.deadline:
            return False
        m.deadline = now + span
        heapq.heappush(self._heap, (m.closes, m.uid, key))
        return True

    # ------------------------------------------------------------------ v2: held for repair

    def is_open(self, dev_eui: str, msg_id: int) -> bool:
        """Whether the device's v2 message ``msg_id`` is open (not rebuilt, not closed)."""
        return (dev_eui, msg_id + V2_KEYS) in self._open

    def held(self, dev_eui: str) -> list[int]:
        """The msg_ids of the device's open v2 messages held for their repair."""
        return sorted(self._holding.get(dev_eui, ()))

    def _see_v2(self, dev_eui: str, msg_id: int) -> list[Message]:
        """A v2 uplink of the device's ``msg_id``: when that is its newest, release its
        held messages that fell out of the device's ``repair_keep`` window (the device
        no longer has them)."""
        newest = self._newest.pop(dev_eui, None)
        if newest is not None and not wire2.newer(msg_id, newest):
            self._newest[dev_eui] = newest
            return []
        self._newest[dev_eui] = msg_id  # re-inserted last: the oldest devices are dropped first
        if len(self._newest) > self.settings.max_open_total:
            del self._newest[next(iter(self._newest))]
        ids = self._holding.get(dev_eui)
        if not ids:
            return []
        keep = self.settings.repair_keep
        gone = [i for i in ids if wire2.behind(msg_id, i) >= keep]
        return self._release_ids(dev_eui, gone)

    def release(self, dev_eui: str, msg_ids: Iterable[int] | None = None) -> list[Message]:
        """End the hold of the device's held v2 messages ``msg_ids`` (None: all): the
        collector will ask the device for nothing more of them (its NEED repeats are
        used up, or it has no downlink route). Each then closes at its own deadline, at
        the next deadline pass when that has passed. Returns the messages released
        (their state changed: the caller commits it)."""
        ids = self._holding.get(dev_eui)
        if not ids:
            return []
        return self._release_ids(dev_eui, list(ids) if msg_ids is None else [i for i in msg_ids if i in ids])

    def _release_ids(self, dev_eui: str, ids: list[int]) -> list[Message]:
        out = []
        for i in sorted(ids):
            key = (dev_eui, i + V2_KEYS)
            m = self._open.get(key)
            if m is None or m.hold is None:
                self._holding[dev_eui].discard(i)
                continue
            self._release(key, m)
            out.append(m)
        if not self._holding.get(dev_eui, True):
            del self._holding[dev_eui]
        return out

    def _release(self, key, m: Message) -> None:
        self._unhold(m)
        m.released = True
        heapq.heappush(self._heap, (m.closes, m.uid, key))

    def _unhold(self, m: Message) -> None:
        m.hold = None
        ids = self._holding.get(m.dev_eui)
        if ids is not None:
            ids.discard(m.msg_id)
            if not ids:
                del self._holding[m.dev_eui]
