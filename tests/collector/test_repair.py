"""The collector's repair decisions and redundancy policy (collector.core.repair)."""

from __future__ import annotations

import json
import math
import random

import pytest

from collector.core.repair import (
    DEFAULT_DOWNLINK_LIMIT,
    DeviceRepair,
    Policy,
    at_least,
    downlink_limit,
    least_parity,
    need_count,
    rebuild_probability,
)
from collector.core.wire2 import Ack, Need, Redundancy, decode_downlink, encode_downlink

P = Policy()


def send(dev: DeviceRepair, msg_id: int, k: int, indices, sent: int | None = None, done=None):
    for i in indices:
        dev.fragment(msg_id, i, k)
    return dev.poll(msg_id, k, sent if sent is not None else len(indices), P, done)


# ---------------------------------------------------------------- the numbers


def test_binomial_tail_matches_the_direct_sum():
    # k=14, r=2 at 10 % loss: whole when at most 2 of 16 are lost
    direct = sum(math.comb(16, j) * 0.1 ** j * 0.9 ** (16 - j) for j in range(3))
    assert rebuild_probability(14, 2, 0.1) == pytest.approx(direct, rel=1e-12)
    assert rebuild_probability(14, 2, 0.1) == pytest.approx(0.7892, abs=1e-4)
    assert at_least(5, 0, 0.3) == 1.0 and at_least(3, 4, 0.9) == 0.0
    assert at_least(4, 4, 1.0) == 1.0 and at_least(4, 1, 0.0) == 0.0


@pytest.mark.parametrize(("loss", "r"), [(0.01, 1), (0.025, 2), (0.05, 3), (0.10, 5), (0.20, 9), (0.30, 14)])
def test_least_parity_for_the_658_byte_record_at_dr0(loss, r):
    """k = 14 (658 bytes at S = 51): the least r whose first-round rebuild is >= 99 %."""
    assert least_parity(14, loss, 0.99) == r
    assert rebuild_probability(14, r, loss) >= 0.99
    assert rebuild_probability(14, r - 1, loss) < 0.99


def test_least_parity_bounds():
    assert least_parity(14, 0.9, 0.99) == 32          # unreachable: the upper bound
    assert least_parity(240, 0.5, 0.99) == 254 - 240  # k + r <= 254
    assert least_parity(14, 0.0, 0.99, lo=1) == 1     # the lower bound


def test_need_count_covers_the_loss_on_the_repair_itself():
    assert need_count(2, 0.0, 0.99) == 2
    assert need_count(2, 0.1, 0.99) == 4   # P(>= 2 of 4 at 90 %) = 0.9963
    assert at_least(4, 2, 0.9) >= 0.99 > at_least(3, 2, 0.9)
    assert need_count(2, 0.5, 0.99, cap=3) == 3


def test_downlink_limit_follows_the_data_rate():
    assert downlink_limit("EU868", "SF12BW125") == 51
    assert downlink_limit("EU868", "SF9BW125") == 115
    assert downlink_limit("US915", "SF10BW125") == 11
    assert downlink_limit(None, "SF9BW125") == DEFAULT_DOWNLINK_LIMIT
    assert downlink_limit("EU868", "bogus") == DEFAULT_DOWNLINK_LIMIT


# ---------------------------------------------------------------- polls


def test_poll_after_a_whole_message_is_acked():
    dev = DeviceRepair("A")
    assert send(dev, 7, 4, range(6)) == Ack(7)


def test_poll_with_fragments_missing_asks_for_at_least_the_missing_count():
    dev = DeviceRepair("A")
    cmd = send(dev, 7, 14, [0, 1, 2, 3, 4, 5, 6, 8, 9, 10, 11, 15], sent=16)  # 12 of 16
    assert isinstance(cmd, Need) and cmd.msg_id == 7
    assert cmd.n >= 2
    # the margin: enough that the repair round itself succeeds at the estimated loss
    assert at_least(cmd.n, 2, 1 - dev.loss(P)) >= P.target
    assert at_least(cmd.n - 1, 2, 1 - dev.loss(P)) < P.target


def test_the_reassembler_decides_done():
    dev = DeviceRepair("A")
    assert send(dev, 1, 4, [0, 1], sent=6, done=True) == Ack(1)     # closed at its deadline
    assert isinstance(send(dev, 2, 4, range(4), done=False), Need)  # e.g. a conflict reopened it


def test_need_never_asks_beyond_the_last_row():
    dev = DeviceRepair("A")
    cmd = send(dev, 3, 200, range(150), sent=250)
    assert cmd == Need(3, 5)
    assert send(dev, 4, 200, range(150), sent=255) == Ack(4)  # nothing more can come: given up


NODECAY = Policy(decay=1.0)


def test_gaps_in_the_indices_are_losses_even_without_a_poll():
    """A device sends a message's indices in order: what is missing below the
    highest index that arrived was lost, so a message ACKed on rebuild (never
    polled) still counts - the estimate is not drawn from lossy messages only."""
    dev = DeviceRepair("A")
    for i in [0, 1, 3, 4, 5, 6, 8, 9, 10, 11, 12, 13, 14, 15]:
        dev.fragment(1, i, 14, NODECAY)
    assert (dev.lost, dev.sent) == (2, 16)


def test_repeated_polls_count_each_fragment_once():
    dev = DeviceRepair("A")
    for i in range(14):
        dev.fragment(1, i, 14, NODECAY)
    dev.poll(1, 14, 16, NODECAY)            # the two parity rows were lost
    assert (dev.lost, dev.sent) == (2, 16)
    dev.poll(1, 14, 16, NODECAY)            # the same poll again
    assert (dev.lost, dev.sent) == (2, 16)
    for i in (16, 17, 18):                  # a NEED round: 4 more sent, 3 arrive
        dev.fragment(1, i, 14, NODECAY)
    dev.poll(1, 14, 20, NODECAY)
    assert (dev.lost, dev.sent) == (3, 20)


def test_late_fragments_correct_the_estimate():
    dev = DeviceRepair("A")
    for i in (0, 1, 2):
        dev.fragment(1, i, 4, NODECAY)
    dev.poll(1, 4, 6, NODECAY)               # 3 lost so far
    assert dev.lost == 3
    dev.fragment(1, 3, 4, NODECAY)           # two arrive late
    dev.fragment(1, 4, 4, NODECAY)
    dev.poll(1, 4, 7, NODECAY)               # and one more row was sent, not seen
    assert (dev.lost, dev.sent) == (2, 7)


def test_older_observations_decay():
    dev = DeviceRepair("A")
    for i in range(0, 20, 2):                # half lost
        dev.fragment(1, i, 14, P)
    high = dev.loss(P)
    for j in range(2, 40):                   # then nothing lost for a while
        for i in range(16):
            dev.fragment(j, i, 14, P)
    assert dev.loss(P) < high / 2


def test_msg_id_reuse_with_another_k_is_a_new_message():
    dev = DeviceRepair("A")
    send(dev, 9, 4, range(4))
    dev.fragment(9, 0, 5)
    assert dev.messages[9].k == 5 and dev.messages[9].held == 1


# ---------------------------------------------------------------- redundancy


def run(dev: DeviceRepair, loss_pattern, messages: int, k: int = 14, start: int = 0) -> list[int | None]:
    """Messages whose fragments are lost per ``loss_pattern(fragment_number)``; the
    device sends the r the collector wants from the message after the change."""
    history = []
    r = dev.r_wanted if dev.r_wanted is not None else 2
    n = start
    for j in range(messages):
        mid = (start + j) % 256
        got = []
        for i in range(k + r):
            if not loss_pattern(n):
                got.append(i)
            n += 1
        send(dev, mid, k, got, sent=k + r)
        dev.delivered()
        r = dev.r_wanted if dev.r_wanted is not None else r
        history.append(dev.r_wanted)
    return history


def test_high_loss_raises_r_to_the_policys_figure():
    dev = DeviceRepair("A")
    history = run(dev, lambda n: n % 10 == 0, 40)  # exactly 10 % lost
    assert history[-1] == 5
    assert dev.loss(P) == pytest.approx(0.1, abs=0.02)
    assert rebuild_probability(14, history[-1], dev.loss(P)) >= 0.99


def test_low_loss_lowers_r_after_the_cooldown():
    dev = DeviceRepair("A", r_observed=8, r_wanted=8)
    history = run(dev, lambda n: False, 30)
    # the prior keeps the estimate near 0.2 %, where r = 0 predicts only 97 %
    assert history[-1] == 1
    assert rebuild_probability(14, 0, dev.loss(P)) < 0.99
    # never lowered twice within the cooldown
    changes = [i for i in range(1, len(history)) if history[i] != history[i - 1]]
    assert all(b - a >= P.cooldown for a, b in zip(changes, changes[1:], strict=False))


def changes(policy: Policy, loss: float, seed: int = 5, messages: int = 300) -> int:
    global P
    saved, P = P, policy
    try:
        rnd = random.Random(seed)
        history = run(DeviceRepair("A"), lambda n: rnd.random() < loss, messages)
    finally:
        P = saved
    return sum(1 for a, b in zip(history, history[1:], strict=False) if a != b)


def test_loss_near_a_threshold_does_not_flap():
    """3 % random loss sits at the edge between r = 2 and r = 3 for k = 14: the
    hysteresis band keeps r from following every wobble of the estimate."""
    steady = changes(P, 0.03)
    assert steady <= 8
    assert changes(Policy(lower_target=P.target), 0.03) > 2 * steady


def test_no_steering_before_enough_observations_or_when_disabled():
    dev = DeviceRepair("A")
    send(dev, 0, 4, range(6))  # 6 fragments seen
    assert dev.r_wanted is None and not dev.redundancy_due
    fixed = DeviceRepair("B")
    for j in range(10):
        for i in range(16):
            fixed.fragment(j, i, 14)
        fixed.poll(j, 14, 16, Policy(adaptive=False))
    assert fixed.r_wanted is None


def test_redundancy_is_due_until_the_device_sends_the_new_r():
    dev = DeviceRepair("A")
    run(dev, lambda n: n % 10 == 0, 10)
    assert dev.r_wanted and dev.r_wanted > 2
    want = dev.r_wanted
    # a message still sent with the old r: the command goes out again
    send(dev, 50, 14, range(16), sent=16)
    assert Redundancy(want) in dev.commands(51)
    dev.handed_over(dev.commands(51))
    dev.delivered()
    send(dev, 51, 14, range(14 + want), sent=14 + want)
    assert not dev.redundancy_due


# ---------------------------------------------------------------- the downlink


def test_commands_are_combined_needs_first_within_the_limit():
    dev = DeviceRepair("A", r_wanted=3, redundancy_due=True, newest=10)
    dev.due = {8: Ack(8), 9: Need(9, 4), 10: Need(10, 2)}
    cmds = dev.commands(51)
    assert cmds == [Need(9, 4), Need(10, 2), Ack(8), Redundancy(3)]
    assert decode_downlink(encode_downlink(cmds)) == cmds
    assert dev.commands(6) == [Need(9, 4), Need(10, 2)]
    assert dev.commands(8) == [Need(9, 4), Need(10, 2), Ack(8)]


def test_commands_for_messages_the_device_no_longer_keeps_are_dropped():
    dev = DeviceRepair("A", newest=5)
    dev.due = {1: Ack(1), 2: Need(2, 3), 5: Ack(5)}
    assert dev.commands(51) == [Need(2, 3), Ack(5)]


def test_delivered_clears_only_what_was_handed_over():
    dev = DeviceRepair("A", newest=3)
    dev.due = {3: Need(3, 2)}
    dev.handed_over(dev.commands(51))
    dev.due[2] = Ack(2)            # came after the hand-over
    dev.due[3] = Need(3, 4)        # replaced after the hand-over: still due
    assert dev.delivered() is True
    assert dev.commands(51) == [Need(3, 4), Ack(2)]
    dev.handed_over(dev.commands(51))
    assert dev.delivered() is False


def test_ack_right_after_a_rebuild():
    dev = DeviceRepair("A")
    dev.fragment(4, 0, 1)
    assert dev.rebuilt(4, P) is True
    assert dev.commands(51) == [Ack(4)]
    assert dev.rebuilt(4, P) is False                       # once
    assert DeviceRepair("B").rebuilt(4, Policy(ack_on_rebuild=False)) is False


def test_state_survives_json():
    dev = DeviceRepair("A")
    run(dev, lambda n: n % 7 == 0, 12)
    send(dev, 12, 14, range(10), sent=16)
    dev.handed_over(dev.commands(51))
    back = DeviceRepair.from_dict(json.loads(json.dumps(dev.to_dict())))
    assert back == dev


def test_policy_refuses_nonsense():
    with pytest.raises(ValueError):
        Policy(target=1.0)
    with pytest.raises(ValueError):
        Policy(max_r=40)
    with pytest.raises(ValueError):
        Policy(target=0.99, lower_target=0.9)
