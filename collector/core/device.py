"""The v2 device: one sans-IO state machine (``docs/spec/wire-format-v2.md`` section 4).

The simulator, the bench's record sender and the tests all run this code, and a
firmware engineer can read it as the reference. It does no I/O and reads no clock:
the caller says when an uplink opportunity comes (``next_uplink(now)``: the duty
cycle and the radio are the caller's business) and hands over every FPort-17
downlink (``downlink(payload, now)``). State is plain data (:class:`Outgoing`).

Per message (``Outgoing.phase``)::

    queued --start--> sending --last fragment--> polling --polls spent--> waiting
                        ^                           |  ^                     |
                        +------ NEED n (a round) ---+--+---------------------+
    any phase --ACK--> forgotten (acked); a NEED beyond ``rounds`` --> forgotten (given up);
    polls spent after the last round --> forgotten (given up); a 5th message started --> oldest evicted

Rules and the choices the spec leaves open:

- A record becomes a message at :meth:`Device.submit` (it gets its ``msg_id`` there,
  +1 per message, 255 wraps to 0). Its fragments are computed when it *starts* (its
  first uplink), and ``r`` is the redundancy in force at that moment: REDUNDANCY
  applies "from the next message on", i.e. to every message not started yet.
- ``polls`` is the number of polls per round in total (the first one included): after
  the last fragment of a round the device polls, and polls again at later
  opportunities, at most ``polls`` times, until an ACK or a NEED for the message
  comes. ``poll_interval`` (default 0) is the least time between two polls of one
  message; the first poll of a round is due at once.
- NEED n for a message that has polled since its last round: a new round. The device
  queues the next n parity rows not sent yet (fewer when k + row would pass 254),
  then polls again. At most ``rounds`` rounds are served; a NEED after that forgets
  the message (given up).
- NEED n for a message that has not polled since its last round (still sending, a
  downlink repeated by the network server, or an answer to an older poll): the same
  round, so no round is spent, and the round's rows are topped up to n in all (a
  repeated NEED 2 sends nothing more; NEED 3 after NEED 2 sends one more row). In
  the first round the rows asked for come after the planned ``r``.
- ACK forgets the message in any phase. A NEED or ACK for a message not held is
  ignored (counted in ``stats.ignored``). REDUNDANCY r takes effect for messages not
  started yet.
- The last ``keep`` (default 4) started messages are held for repair; starting one
  more evicts the oldest held, whatever its phase.
- Order at an uplink opportunity (the first that applies):
  1. + 2., held messages oldest first: the first poll of a round, repair rows (NEED)
     and the fragments of the message being sent (data, then its ``r`` parity rows).
     So repairs come before newer data: they finish a message the collector is
     already waiting for;
  3. repeated polls that are due (``poll_interval`` after the last one), oldest
     message first: an answer usually rides on the uplink after the poll it answers,
     and one lost on the radio is only asked for again by a poll; polls starved by a
     backlog of new records would let messages be evicted before their repair;
  4. starting the next queued message.
- ``idle`` is true when nothing is due now or later: no queued record, no fragment
  or poll left to send (messages waiting for a late answer do not count).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from collector.core import fec, wire2

Phase = Literal["queued", "sending", "polling", "waiting"]


class DeviceError(ValueError):
    """Illegal use of :class:`Device` (a bad record or size, time going backwards)."""


@dataclass
class DeviceStats:
    submitted: int = 0
    data_sent: int = 0
    #: parity rows sent with a message (its ``r``)
    parity_sent: int = 0
    #: parity rows sent for a NEED
    repair_sent: int = 0
    polls_sent: int = 0
    #: NEEDs that started a round
    needs_served: int = 0
    #: NEEDs merged into a round already under way
    needs_merged: int = 0
    acked: int = 0
    #: forgotten with rounds spent (a NEED beyond ``rounds``, or polls spent after the last round)
    given_up: int = 0
    evicted: int = 0
    #: commands for a message not held
    ignored: int = 0
    redundancy_changes: int = 0

    @property
    def uplinks(self) -> int:
        return self.data_sent + self.parity_sent + self.repair_sent + self.polls_sent


@dataclass
class Outgoing:
    """One message on the device, as plain data."""

    msg_id: int
    record: bytes
    size: int
    k: int
    phase: Phase = "queued"
    #: parity rows planned with the message (set when it starts)
    r: int = 0
    #: fragment indices still to send in the current round, in order
    due: deque[int] = field(default_factory=deque)
    #: next parity row never sent nor queued
    next_row: int = 0
    #: distinct fragments sent (what a poll reports)
    sent: int = 0
    #: polls sent in the current round
    polls: int = 0
    last_poll: float | None = None
    #: rounds served (NEEDs that started a round)
    rounds: int = 0
    #: a poll has gone out since the current round's fragments were queued
    polled: bool = False
    #: rows NEEDs asked for in the current round (beyond the planned ``r`` in the first)
    asked: int = 0
    started: float | None = None

    def __post_init__(self) -> None:
        self._chunks: list[bytes] | None = None
        self._pad = 0

    def fragment(self, index: int) -> bytes:
        if self._chunks is None:
            self._chunks, self._pad = wire2.chunks(self.record, self.size)
        head = bytes((self.msg_id, index, self.k, self._pad))
        if index == self.k - 1 and self._pad:  # the last data chunk leaves out its pad
            return head + self._chunks[index][: -self._pad]
        if index < self.k:
            return head + self._chunks[index]
        return head + fec.parity_rows(self._chunks, index - self.k, 1)[0]

    def queue_rows(self, n: int) -> int:
        """Queue up to ``n`` parity rows never sent; returns how many fitted."""
        room = fec.MAX_INDEX - self.k - self.next_row + 1
        n = max(0, min(n, room))
        self.due.extend(range(self.k + self.next_row, self.k + self.next_row + n))
        self.next_row += n
        return n


class Device:
    """The device side of wire format v2. Drive it with :meth:`submit`,
    :meth:`next_uplink` and :meth:`downlink`; see the module docstring for the rules."""

    def __init__(self, *, parity: int = 2, polls: int = 3, rounds: int = 3, keep: int = 4,
                 first_msg_id: int = 0, poll_interval: float = 0.0):
        if not 0 <= parity <= wire2.MAX_REDUNDANCY:
            raise DeviceError(f"parity {parity} outside 0..{wire2.MAX_REDUNDANCY}")
        if polls < 1 or rounds < 0 or keep < 1:
            raise DeviceError("polls and keep must be at least 1, rounds at least 0")
        if not 0 <= first_msg_id <= 255:
            raise DeviceError(f"first_msg_id {first_msg_id} outside 0..255")
        if poll_interval < 0:
            raise DeviceError("poll_interval must not be negative")
        self.parity = parity
        self.polls = polls
        self.rounds = rounds
        self.keep = keep
        self.poll_interval = poll_interval
        self.next_msg_id = first_msg_id
        self.stats = DeviceStats()
        #: records submitted, not started yet
        self.queue: deque[Outgoing] = deque()
        #: started messages held for repair, oldest first (at most ``keep``)
        self.held: list[Outgoing] = []
        self._now: float | None = None

    # ------------------------------------------------------------------ queries

    @property
    def idle(self) -> bool:
        return not self.queue and not any(m.due or m.phase == "polling" for m in self.held)

    def message(self, msg_id: int) -> Outgoing | None:
        """The held (started) message with this id, if any."""
        return next((m for m in self.held if m.msg_id == msg_id), None)

    def next_due(self, now: float) -> float | None:
        """The earliest time at or after ``now`` when :meth:`next_uplink` has something
        to send, or None when nothing is due now or later."""
        if self.queue or any(m.due for m in self.held):
            return now
        times = [now if m.last_poll is None or m.polls == 0 else max(now, m.last_poll + self.poll_interval)
                 for m in self.held if m.phase == "polling"]
        return min(times, default=None)

    # ------------------------------------------------------------------ events

    def _tick(self, now: float) -> None:
        if self._now is not None and now < self._now:
            raise DeviceError(f"time went backwards: {now} after {self._now}")
        self._now = now

    def submit(self, record: bytes, size: int, now: float) -> int:
        """Queue ``record`` as a new message sent at fragment size ``size``; returns its
        msg_id. DeviceError when the size is out of range or the record does not fit v2."""
        self._tick(now)
        try:
            k, _, _ = wire2.geometry(len(record), size)
        except ValueError as e:
            raise DeviceError(str(e)) from None
        msg_id = self.next_msg_id
        self.next_msg_id = (msg_id + 1) & 0xFF
        self.queue.append(Outgoing(msg_id, bytes(record), size, k))
        self.stats.submitted += 1
        return msg_id

    def next_uplink(self, now: float) -> bytes | None:
        """The FPort-17 payload to send at this opportunity, or None when nothing is due."""
        self._tick(now)
        for m in self.held:  # 1. + 2. oldest first: first polls, repair rows, fragments
            if m.phase == "polling" and m.polls == 0:
                return self._poll(m, now)
            if m.due:
                return self._send(m)
        for m in self.held:  # 3. repeated polls that are due
            if m.phase == "polling" and (m.last_poll is None or now >= m.last_poll + self.poll_interval):
                return self._poll(m, now)
        if self.queue:  # 4. the next message
            return self._send(self._start(now))
        return None

    def downlink(self, payload: bytes, now: float) -> None:
        """Take an FPort-17 downlink (a run of ACK / NEED / REDUNDANCY commands)."""
        self._tick(now)
        for cmd in wire2.decode_downlink(payload):
            if isinstance(cmd, wire2.Redundancy):
                if cmd.r != self.parity:
                    self.stats.redundancy_changes += 1
                self.parity = cmd.r
                continue
            m = self.message(cmd.msg_id)
            if m is None:
                self.stats.ignored += 1
            elif isinstance(cmd, wire2.Ack):
                self._forget(m)
                self.stats.acked += 1
            else:
                self._need(m, cmd.n)

    # ------------------------------------------------------------------ transitions

    def _start(self, now: float) -> Outgoing:
        m = self.queue.popleft()
        if len(self.held) >= self.keep:
            self.held.pop(0)
            self.stats.evicted += 1
        m.phase = "sending"
        m.started = now
        m.due.extend(range(m.k))
        m.r = m.queue_rows(self.parity)
        self.held.append(m)
        return m

    def _send(self, m: Outgoing) -> bytes:
        index = m.due.popleft()
        payload = m.fragment(index)
        m.sent += 1
        if index < m.k:
            self.stats.data_sent += 1
        elif m.rounds:
            self.stats.repair_sent += 1
        else:
            self.stats.parity_sent += 1
        if not m.due:
            m.phase = "polling"
            m.polls = 0
        return payload

    def _poll(self, m: Outgoing, now: float) -> bytes:
        m.polls += 1
        m.last_poll = now
        m.polled = True
        self.stats.polls_sent += 1
        if m.polls >= self.polls:
            if m.rounds >= self.rounds:  # nothing more it could serve
                self._forget(m)
                self.stats.given_up += 1
            else:
                m.phase = "waiting"
        return wire2.poll(m.msg_id, m.k, min(m.sent, 255))

    def _need(self, m: Outgoing, n: int) -> None:
        if not m.polled:  # the same round: it asks for max(asked, n) rows in all
            if n > m.asked:
                added = m.queue_rows(n - m.asked)
                m.asked = n
                if added:
                    m.phase = "sending"
            self.stats.needs_merged += 1
            return
        if m.rounds >= self.rounds:
            self._forget(m)
            self.stats.given_up += 1
            return
        m.rounds += 1
        m.polled = False
        m.asked = n
        self.stats.needs_served += 1
        if m.queue_rows(n):
            m.phase = "sending"
        else:  # no row left to send: say so with a poll
            m.phase = "polling"
            m.polls = 0

    def _forget(self, m: Outgoing) -> None:
        self.held.remove(m)
