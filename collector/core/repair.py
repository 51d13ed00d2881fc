"""The collector's side of the v2 repair loop (sans-IO): what to tell each device.

Spec: ``docs/spec/wire-format-v2.md`` sections 3-5; the choices are explained in
``docs/repair.md`` ("The collector", "Redundancy policy"). The service and the
simulator both drive it, so it never reads a clock and does no I/O: its state is
plain data (:meth:`DeviceRepair.to_dict`) the service commits with each uplink that
changes it. (Over 400 lines: the per-device state and every decision on it are one
state machine, persisted as one dict; splitting it would split that state.)

Per device, :class:`DeviceRepair` is fed the v2 uplinks as they are accepted:

- :meth:`~DeviceRepair.fragment` for every fragment (the distinct indices held per
  ``msg_id``, counted here so the loss estimate does not depend on whether the
  reassembler still has the message open);
- :meth:`~DeviceRepair.poll` for a poll: it updates the loss estimate (the poll's
  ``sent`` minus the distinct fragments held, counted once per fragment across
  repeated polls), steers the device's parity (adaptive redundancy) and answers
  ACK when the message is done (rebuilt, or closed by the reassembler) or NEED
  with ``n >= k - held``, enough that the repair round itself succeeds with
  probability ``target`` at the estimated loss;
- :meth:`~DeviceRepair.rebuilt` right after a rebuild: an early ACK, which spares
  the device its polls;
- :meth:`~DeviceRepair.handed_over` / :meth:`~DeviceRepair.delivered`: a downlink
  was handed to the network server; the device's next uplink opened the receive
  windows it went out in, so its commands are no longer due.

- :meth:`~DeviceRepair.after_uplink` once per uplink: a NEED the device evidently
  did not hear, or a message whose polls were all lost, gets a NEED again (bounded;
  ``docs/repair.md``, "Lost answers").

Every command still due travels in the device's one pending downlink
(:meth:`~DeviceRepair.commands`), NEEDs first, then ACKs, then REDUNDANCY, within
the downlink size of the device's data rate; what does not fit stays due.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.core import lorawan
from collector.core.wire2 import MAX_REDUNDANCY, Ack, Need, Redundancy
from collector.core.wire2 import behind as _behind
from collector.core.wire2 import newer as _newer

Command = Ack | Need | Redundancy

#: the highest fragment index of a message (255 is the poll)
MAX_INDEX = 254
#: msg_ids a device's state remembers (twice the device's repair window)
TRACKED = 8
#: downlink size assumed when the uplink's data rate is not known: the smallest
#: FRMPayload of any uplink data rate the regions define (US915 DR0)
DEFAULT_DOWNLINK_LIMIT = 11


@dataclass(frozen=True)
class Policy:
    """The repair and redundancy policy (``docs/repair.md``, "Redundancy policy")."""

    #: predicted probability that a message is rebuilt without a repair round (for
    #: the parity r) and that one repair round suffices (for NEED n)
    target: float = 0.99
    #: hysteresis: r is lowered only to a value that still meets this stricter target
    lower_target: float = 0.995
    min_r: int = 0
    max_r: int = 32
    #: steer each device's r with REDUNDANCY
    adaptive: bool = True
    #: ACK a message as soon as it is rebuilt, without waiting for its poll
    ack_on_rebuild: bool = True
    #: prior of the loss estimate: ``prior_lost`` fragments lost in ``prior_sent``
    prior_lost: float = 1.0
    prior_sent: float = 20.0
    #: weight the older observations keep per fragment sent (0.998: about the last
    #: 500 fragments weigh most)
    decay: float = 0.998
    #: fragments observed before r is steered at all
    min_observed: int = 20
    #: new messages polled between two reductions of r (raising is never delayed)
    cooldown: int = 3
    #: messages a device keeps for repair (spec section 4): older commands are dropped
    keep: int = 4
    #: a NEED the device evidently did not hear (its later uplinks show no repair rows
    #: for the message) is sent again at most this many times per message; 0: never
    #: (``docs/repair.md``, "Lost answers": 3 in a row go unheard often enough at 30 %
    #: loss to close messages their devices still held)
    repeats: int = 8
    #: an ACK the device evidently did not hear (a fragment of the message arrived from
    #: an uplink after the ACK's receive window) is sent again at most this many times
    #: per message; 0: never, the device sends the rest of its rows and polls
    #: (``docs/repair.md``, "Where the airtime above the limit goes")
    ack_repeats: int = 3

    def __post_init__(self) -> None:
        if not 0.0 < self.target < 1.0 or not self.target <= self.lower_target < 1.0:
            raise ValueError("need 0 < target <= lower_target < 1")
        if not 0 <= self.min_r <= self.max_r <= 32:
            raise ValueError("need 0 <= min_r <= max_r <= 32")
        if not 0.0 < self.decay <= 1.0:
            raise ValueError("decay must be in (0, 1]")
        if self.repeats < 0 or self.ack_repeats < 0:
            raise ValueError("repeats and ack_repeats must be at least 0")


DEFAULT_POLICY = Policy()


def rebuild_probability(k: int, r: int, loss: float) -> float:
    """P(at least ``k`` of the ``k + r`` fragments arrive) with independent loss."""
    return at_least(k + r, k, 1.0 - loss)


def at_least(n: int, m: int, q: float) -> float:
    """P(Binomial(n, q) >= m)."""
    if m <= 0:
        return 1.0
    if m > n:
        return 0.0
    if q >= 1.0:
        return 1.0
    if q <= 0.0:
        return 0.0
    # the complement's terms are the small ones when m is close to n
    return sum(math.comb(n, i) * q ** i * (1.0 - q) ** (n - i) for i in range(m, n + 1))


def least_parity(k: int, loss: float, target: float, lo: int = 0, hi: int = 32) -> int:
    """The least r in ``lo..hi`` (and ``k + r <= 254``) whose predicted first-round
    rebuild reaches ``target``; ``hi`` when none does."""
    hi = max(lo, min(hi, MAX_INDEX - k))
    for r in range(lo, hi + 1):
        if rebuild_probability(k, r, loss) >= target:
            return r
    return hi


def need_count(missing: int, loss: float, target: float, cap: int = 255) -> int:
    """The least n >= ``missing`` (at most ``cap``) with which ``missing`` of the
    ``n`` fresh rows arrive with probability ``target``."""
    cap = max(1, min(cap, 255))
    for n in range(max(1, missing), cap + 1):
        if at_least(n, missing, 1.0 - loss) >= target:
            return n
    return cap


def downlink_limit(region: str | None, data_rate: str | None) -> int:
    """FRMPayload bytes a downlink to a device may carry: the maximum payload of the
    data rate its uplinks use (RX1 answers at that rate in EU868; elsewhere it is the
    conservative choice), or :data:`DEFAULT_DOWNLINK_LIMIT` when unknown."""
    if not region or not data_rate:
        return DEFAULT_DOWNLINK_LIMIT
    try:
        sf, bw = lorawan.parse_data_rate_name(data_rate)
        return lorawan.region(region).dr_for(sf, bw).max_payload
    except ValueError:
        return DEFAULT_DOWNLINK_LIMIT


def encoded_size(c: Command) -> int:
    return 3 if isinstance(c, Need) else 2


@dataclass
class Seen:
    """What the collector saw of one message of a device."""

    k: int
    indices: set[int] = field(default_factory=set)
    #: fragments known to have been sent: the highest index seen + 1, or the
    #: ``sent`` of a poll (the device sends the indices in order)
    sent: int = 0
    polls: int = 0
    needs: int = 0
    acked: bool = False
    #: parity rows the NEEDs for it asked for, in all
    asked: int = 0
    #: the ``sent`` of the poll that started the latest repair round and the n asked
    #: in it: the same poll again (a retry, a repeat while the NEED was lost) is
    #: that round, not a new one
    round_sent: int = -1
    round_n: int = 0
    #: uplinks of the device since a NEED for this message went out in a downlink
    #: and nothing of the repair it asked for arrived (-1: no NEED awaiting rows)
    quiet: int = -1
    #: NEEDs sent again because the device evidently had not heard the last one
    repeated: int = 0
    #: a NEED was evidently not heard once more and no repeat is left (or no row is
    #: left to ask for): the collector asks for nothing more unless the device polls
    exhausted: bool = False
    #: uplinks of the device since an ACK for this message went out in a downlink
    #: (-1: none awaiting); a fragment after that shows the ACK was lost on the air
    ack_wait: int = -1
    #: ACKs sent again because the device evidently had not heard the last one
    acks_repeated: int = 0

    @property
    def held(self) -> int:
        return len(self.indices)

    @property
    def plausible(self) -> int:
        """The most fragments a device can have sent: its k data chunks, at most
        REDUNDANCY's 32 planned parity rows, and the rows NEEDs asked for. A larger
        ``sent`` or index (a firmware bug, a device that misbehaves) is not counted as
        radio loss: one such poll would otherwise steer the device to 32 parity rows
        for hundreds of messages."""
        return self.k + MAX_REDUNDANCY + self.asked

    def to_dict(self) -> dict:
        return {"k": self.k, "indices": sorted(self.indices), "sent": self.sent,
                "polls": self.polls, "needs": self.needs,
                "acked": self.acked, "asked": self.asked, "round_sent": self.round_sent,
                "round_n": self.round_n, "quiet": self.quiet, "repeated": self.repeated,
                "exhausted": self.exhausted, "ack_wait": self.ack_wait, "acks_repeated": self.acks_repeated}

    @classmethod
    def from_dict(cls, d: dict) -> Seen:
        return cls(d["k"], set(d["indices"]), d["sent"], d["polls"], d["needs"], d["acked"], d.get("asked", 0),
                   d.get("round_sent", -1), d.get("round_n", 0), d.get("quiet", -1), d.get("repeated", 0),
                   d.get("exhausted", False), d.get("ack_wait", -1), d.get("acks_repeated", 0))


@dataclass
class DeviceRepair:
    dev_eui: str
    #: decayed counts of fragments lost and sent (from the gaps in the indices that
    #: arrived, and the ``sent`` of polls)
    lost: float = 0.0
    sent: float = 0.0
    #: fragments the loss estimate has seen in all (not decayed)
    observed: int = 0
    newest: int | None = None
    #: parity rows the device sends, from the first poll of its latest message
    r_observed: int | None = None
    #: the r the collector decided (None until it has steered this device)
    r_wanted: int | None = None
    #: new messages polled since r was last changed
    since_change: int = 0
    messages: dict[int, Seen] = field(default_factory=dict)
    #: ACK or NEED still due, per msg_id
    due: dict[int, Ack | Need] = field(default_factory=dict)
    redundancy_due: bool = False
    #: the commands of the downlink the network server has (None: none handed over)
    in_flight: list[Command] | None = None
    counts: dict[str, int] = field(default_factory=dict)

    # ------------------------------------------------------------------ estimates

    def loss(self, policy: Policy) -> float:
        return min(0.95, (self.lost + policy.prior_lost) / (self.sent + policy.prior_sent))

    def _count(self, name: str) -> None:
        self.counts[name] = self.counts.get(name, 0) + 1

    def _see(self, msg_id: int, k: int) -> Seen:
        m = self.messages.get(msg_id)
        if m is None or m.k != k:  # a new message (or the msg_id came round again)
            m = self.messages[msg_id] = Seen(k)
            self.due.pop(msg_id, None)
        if self.newest is None or _newer(msg_id, self.newest):
            self.newest = msg_id
            for old in [i for i in self.messages if _behind(self.newest, i) >= TRACKED]:
                del self.messages[old]
        return m

    # ------------------------------------------------------------------ events

    def _observe(self, d_sent: int, d_lost: int, policy: Policy) -> None:
        f = policy.decay ** d_sent
        self.lost = max(0.0, self.lost * f + d_lost)
        self.sent = self.sent * f + d_sent
        self.observed += d_sent

    def fragment(self, msg_id: int, index: int, k: int, policy: Policy | None = None) -> bool:
        """A fragment (data chunk or parity row) was accepted. A device sends a
        message's indices in order, so the indices below it that have not arrived
        were lost (for now: one that arrives late is given back). True when an ACK
        became due again: the fragment came from an uplink after the one whose receive
        windows carried the message's ACK, so the device did not hear it and would send
        the rest of its rows (at most ``policy.ack_repeats`` times per message)."""
        policy = policy or DEFAULT_POLICY
        m = self._see(msg_id, k)
        again = False
        if m.acked and m.ack_wait >= 1 and msg_id not in self.due:
            m.ack_wait = -1
            if m.acks_repeated < policy.ack_repeats:
                m.acks_repeated += 1
                self.due[msg_id] = Ack(msg_id)
                self._count("acks_repeated")
                again = True
        if m.quiet >= 0 and index >= m.round_sent:
            m.quiet = -1  # a row of the repair asked for: the device heard the NEED
        if index in m.indices:
            return again
        m.indices.add(index)
        if index >= m.sent:
            d = min(index + 1, max(m.sent + 1, m.plausible)) - m.sent
            m.sent = index + 1
            self._observe(d, d - 1, policy)
        else:
            self.lost = max(0.0, self.lost - 1)
        return again

    def poll(self, msg_id: int, k: int, sent: int, policy: Policy, done: bool | None = None,
             held: int | None = None) -> Ack | Need:
        """A poll was accepted; ``done``: the reassembler rebuilt or closed the message
        (None: decide from the fragments counted here); ``held``: the distinct
        fragments the reassembler holds (None: those counted here), for NEED's n.
        Returns the answer, now due."""
        m = self._see(msg_id, k)
        m.quiet = -1  # the answer to this poll is decided anew
        first = m.polls == 0
        m.polls += 1
        self._count("polls")
        counted = m.held
        # for the estimates; what NEED may still ask for follows the device's own word
        believed = min(sent, max(m.sent, m.plausible))
        d_sent = max(0, believed - m.sent)
        if d_sent:
            # the fragments after the last one that arrived: lost (or late)
            m.sent = believed
            self._observe(d_sent, d_sent, policy)
        if first and m.needs == 0 and believed >= k:
            self.r_observed = believed - k
            self.since_change += 1
        if policy.adaptive:
            self._steer(k, policy)
        if self.r_wanted is not None and self.r_observed is not None and self.r_observed != self.r_wanted:
            self.redundancy_due = True
        if held is None:
            held = counted
        if done is None:
            done = held >= k
        remaining = 255 - max(sent, held)
        if done or remaining <= 0:
            cmd: Ack | Need = Ack(msg_id)
            m.acked = True
            self._count("acks")
        else:
            cmd = Need(msg_id, need_count(k - held, self.loss(policy), policy.target, remaining))
            if sent > m.round_sent:  # the device sent more since: a new round
                m.needs += 1
                m.round_sent, m.round_n = sent, 0
            m.asked += max(0, cmd.n - m.round_n)  # a round's rows are topped up to its largest n
            m.round_n = max(m.round_n, cmd.n)
            self._count("needs")
        self.due[msg_id] = cmd
        return cmd

    def rebuilt(self, msg_id: int, policy: Policy) -> bool:
        """The message was rebuilt; True when an ACK became due."""
        m = self.messages.get(msg_id)
        if not policy.ack_on_rebuild or (m is not None and m.acked):
            return False
        if m is not None:
            m.acked = True
        self.due[msg_id] = Ack(msg_id)
        self._count("acks")
        return True

    def _steer(self, k: int, policy: Policy) -> None:
        current = self.r_wanted if self.r_wanted is not None else self.r_observed
        if current is None or self.observed < policy.min_observed:
            return
        p = self.loss(policy)
        new = least_parity(k, p, policy.target, policy.min_r, policy.max_r)
        if new <= current:
            # lowered only past the stricter target, and not again before the
            # device has sent a few messages with the last setting
            new = least_parity(k, p, policy.lower_target, policy.min_r, policy.max_r)
            if new >= current or self.since_change < policy.cooldown:
                return
        if new != self.r_wanted:
            self.r_wanted = new
            self.since_change = 0
            self.redundancy_due = True
            self._count("redundancy_changes")

    # ------------------------------------------------------------------ downlinks

    def commands(self, limit: int, keep: int = 4) -> list[Command]:
        """Every command still due that fits in ``limit`` bytes: NEEDs, ACKs, then
        REDUNDANCY. Commands for messages the device no longer keeps (``keep``
        behind its newest) are dropped."""
        if self.newest is not None:
            for mid in [i for i in self.due if _behind(self.newest, i) >= keep]:
                del self.due[mid]
        out: list[Command] = []
        size = 0
        ordered = sorted(self.due.values(), key=lambda c: (not isinstance(c, Need), c.msg_id))
        extra: list[Command] = [Redundancy(self.r_wanted)] if self.redundancy_due and self.r_wanted is not None else []
        for c in [*ordered, *extra]:
            if size + encoded_size(c) <= limit:
                out.append(c)
                size += encoded_size(c)
        return out

    @property
    def has_due(self) -> bool:
        return bool(self.due) or (self.redundancy_due and self.r_wanted is not None)

    def handed_over(self, commands: list[Command]) -> None:
        """The network server took a downlink carrying ``commands``."""
        self.in_flight = list(commands)

    def delivered(self) -> bool:
        """An uplink from the device arrived after the last hand-over: its receive
        windows carried the downlink (or lost it; a poll will ask again). The
        commands it carried are no longer due; True when something still is."""
        if self.in_flight is None:
            return self.has_due
        for c in self.in_flight:
            if isinstance(c, Redundancy):
                if c.r == self.r_wanted:
                    self.redundancy_due = False
            else:
                if self.due.get(c.msg_id) == c:
                    del self.due[c.msg_id]
                m = self.messages.get(c.msg_id)
                if isinstance(c, Need) and m is not None and not m.acked:
                    m.quiet = 0  # from now on its rows should come
                if isinstance(c, Ack) and m is not None:
                    m.ack_wait = 0  # from the next uplink on, a fragment shows it was lost
        self.in_flight = None
        return self.has_due

    def after_uplink(self, policy: Policy, is_open: Callable[[int], bool] | None = None) -> list[Ack | Need]:
        """Call once per uplink of the device, after :meth:`delivered` and the uplink's
        own :meth:`fragment` or :meth:`poll`. A NEED that went out in a downlink whose
        receive windows have passed, followed by another uplink without a row of the
        repair it asked for (nor a poll of that message), was evidently lost on the
        air: while the device can still hold the message (within its last ``keep``)
        and the message is not rebuilt, the NEED is due again, at most
        ``policy.repeats`` times per message. ``is_open(msg_id)``: whether the
        reassembler still has the message open (None: assume it has); one it closed
        (given up at its deadline) is answered ACK instead, so the device forgets it
        rather than sending rows into a closed message. Returns the commands made due.

        Without this a device whose polls of a round were all used up waits for an
        answer nothing asks for again (``docs/repair.md``, "Lost answers")."""
        out: list[Ack | Need] = []
        for msg_id, m in self.messages.items():
            if m.ack_wait >= 0:
                m.ack_wait += 1
            if m.quiet >= 0:
                m.quiet += 1
                if m.quiet < 2:  # this uplink's windows carried the NEED: rows come after it
                    continue
                m.quiet = -1
                unpolled = False
            elif m.polls == 0 and m.needs == 0 and self.newest is not None and _newer(self.newest, msg_id):
                # never polled, yet the device has moved on to a newer message: every
                # poll of its round was lost on the way in
                unpolled = True
            else:
                continue
            remaining = 255 - max(m.sent, m.held)
            if (m.acked or m.held >= m.k or msg_id in self.due or self.newest is None
                    or _behind(self.newest, msg_id) >= policy.keep):
                continue
            if m.repeated >= policy.repeats or remaining <= 0:
                m.exhausted = True  # nothing more will be asked: the reassembler may stop waiting
                continue
            if is_open is not None and not is_open(msg_id):
                # "rebuilt (or already closed) -> ACK": rows would open a message that
                # holds none of the fragments the closed one had
                m.acked = True
                self.due[msg_id] = Ack(msg_id)
                self._count("acks")
                out.append(Ack(msg_id))
                continue
            m.repeated += 1
            cmd = Need(msg_id, need_count(m.k - m.held, self.loss(policy), policy.target, remaining))
            if unpolled:  # the device has polled since its last round: this NEED starts one
                m.needs += 1
                m.round_sent, m.round_n = m.sent, 0
            m.asked += max(0, cmd.n - m.round_n)  # a repeat tops the same round up to n
            m.round_n = max(m.round_n, cmd.n)
            self.due[msg_id] = cmd
            self._count("needs_repeated")
            out.append(cmd)
        return out

    def exhausted(self) -> list[int]:
        """The msg_ids whose NEED repeats are used up (the device evidently did not hear
        the last one): the collector asks the device for nothing more of them unless
        it polls again, so the reassembler need not hold them open for their rows."""
        return [i for i, m in self.messages.items() if m.exhausted]

    # ------------------------------------------------------------------ persistence

    def to_dict(self) -> dict:
        return {"dev_eui": self.dev_eui, "lost": self.lost, "sent": self.sent, "observed": self.observed,
                "newest": self.newest, "r_observed": self.r_observed, "r_wanted": self.r_wanted,
                "since_change": self.since_change,
                "messages": {str(i): m.to_dict() for i, m in self.messages.items()},
                "due": [_cmd_dict(c) for c in self.due.values()], "redundancy_due": self.redundancy_due,
                "in_flight": None if self.in_flight is None else [_cmd_dict(c) for c in self.in_flight],
                "counts": dict(self.counts)}

    @classmethod
    def from_dict(cls, d: dict) -> DeviceRepair:
        due = [_cmd(c) for c in d["due"]]
        return cls(d["dev_eui"], d["lost"], d["sent"], d["observed"], d["newest"], d["r_observed"],
                   d["r_wanted"], d["since_change"],
                   {int(i): Seen.from_dict(m) for i, m in d["messages"].items()},
                   {c.msg_id: c for c in due if isinstance(c, Ack | Need)}, d["redundancy_due"],
                   None if d["in_flight"] is None else [_cmd(c) for c in d["in_flight"]], dict(d["counts"]))

    def summary(self, policy: Policy) -> dict:
        """What the API shows of the device's repair state."""
        return {"loss": round(self.loss(policy), 4), "observedFragments": self.observed,
                "parityObserved": self.r_observed, "parityWanted": self.r_wanted,
                "due": [describe(c) for c in self.commands(255)], **self.counts}


def describe(c: Command) -> str:
    if isinstance(c, Ack):
        return f"ACK {c.msg_id}"
    if isinstance(c, Need):
        return f"NEED {c.msg_id} {c.n}"
    return f"REDUNDANCY {c.r}"


def _cmd_dict(c: Command) -> dict:
    if isinstance(c, Ack):
        return {"ack": c.msg_id}
    if isinstance(c, Need):
        return {"need": c.msg_id, "n": c.n}
    return {"redundancy": c.r}


def _cmd(d: dict) -> Command:
    if "ack" in d:
        return Ack(d["ack"])
    if "need" in d:
        return Need(d["need"], d["n"])
    return Redundancy(d["redundancy"])
