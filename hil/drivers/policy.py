"""The recovery policy: a pure function of the outcome of one transmit attempt and
the counters so far (:func:`next_step`), so every rule (bounded retry on
``busy``/``no_free_ch``, reset + rejoin on a missing second reply, rejoin on
``frame_counter_err_rejoin_needed``, re-fragmenting on ``invalid_data_len``) is
tested without a serial port."""

from __future__ import annotations

import enum
from dataclasses import dataclass

# --------------------------------------------------------------------------- recovery policy


class Outcome(enum.Enum):
    SENT = "sent"
    BUSY = "busy"  # busy / no_free_ch / AT_BUSY_ERROR / AT_DUTYCYCLE_RESTRICTED
    NO_FIRST_REPLY = "no_first_reply"
    NO_SECOND_REPLY = "no_second_reply"
    REBOOTED = "rebooted"  # a boot banner arrived while waiting
    NOT_JOINED = "not_joined"
    REJOIN_NEEDED = "rejoin_needed"  # frame_counter_err_rejoin_needed
    TOO_LONG = "too_long"  # invalid_data_len / AT_PARAM_ERROR above N
    REJECTED = "rejected"  # any other error reply
    NACK = "nack"  # confirmed uplink not acknowledged


class Step(enum.Enum):
    DONE = "done"
    WAIT_RETRY = "wait_retry"
    RESET_REJOIN = "reset_rejoin"
    REJOIN = "rejoin"
    REFRAGMENT = "refragment"
    FAIL = "fail"


@dataclass(frozen=True)
class RecoveryPolicy:
    #: retries after busy/no_free_ch before giving up; the default waits up to about
    #: 12 minutes in all, more than the 1 % off-time after the longest EU868 frame
    #: (51 bytes at SF12: 2.8 s on air, 277 s off)
    busy_retries: int = 12
    first_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 120.0
    #: module resets (+ rejoin) per send after a missing reply or a reboot
    max_resets: int = 1
    #: rejoins per send after not_joined / frame_counter_err_rejoin_needed
    max_rejoins: int = 1
    #: join attempts before JoinDenied / ChannelBusy
    join_attempts: int = 2

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return min(self.max_delay_s, self.first_delay_s * self.factor**retry)

    def worst_case_wait(self) -> float:
        return sum(self.delay(i) for i in range(self.busy_retries))


@dataclass
class Counters:
    busy: int = 0
    resets: int = 0
    rejoins: int = 0
    attempts: int = 0


@dataclass(frozen=True)
class Decision:
    step: Step
    delay_s: float = 0.0
    reason: str = ""


def next_step(outcome: Outcome, c: Counters, policy: RecoveryPolicy) -> Decision:
    """What to do after one transmit attempt. Pure: the caller updates ``c``."""
    if outcome is Outcome.SENT:
        return Decision(Step.DONE)
    if outcome is Outcome.BUSY:
        if c.busy < policy.busy_retries:
            return Decision(Step.WAIT_RETRY, policy.delay(c.busy))
        return Decision(Step.FAIL, reason=f"module still busy / no free channel after {c.busy} retries")
    if outcome in (Outcome.NO_FIRST_REPLY, Outcome.NO_SECOND_REPLY, Outcome.REBOOTED):
        if c.resets < policy.max_resets:
            return Decision(Step.RESET_REJOIN)
        what = {
            Outcome.NO_FIRST_REPLY: "no reply to the transmit command",
            Outcome.NO_SECOND_REPLY: "no second reply to the transmit command",
            Outcome.REBOOTED: "the module rebooted during the transmit",
        }[outcome]
        return Decision(Step.FAIL, reason=f"{what}, also after {c.resets} reset(s) and rejoin")
    if outcome in (Outcome.NOT_JOINED, Outcome.REJOIN_NEEDED):
        if c.rejoins < policy.max_rejoins:
            return Decision(Step.REJOIN)
        return Decision(Step.FAIL, reason=f"module needs a join ({outcome.value}) after {c.rejoins} rejoin(s)")
    if outcome is Outcome.TOO_LONG:
        return Decision(Step.REFRAGMENT)
    if outcome is Outcome.NACK:
        return Decision(Step.FAIL, reason="confirmed uplink not acknowledged")
    return Decision(Step.FAIL, reason="module rejected the transmit")
