"""Answers lost on the air (docs/repair.md, "Lost answers"): the collector repeats a
NEED the device evidently did not hear, and NEEDs a message whose polls all got lost,
on the device's later uplinks (collector.core.repair.DeviceRepair.after_uplink)."""

from __future__ import annotations

import json

from collector.core.repair import DeviceRepair, Policy
from collector.core.wire2 import Ack, Need

P = Policy()
K = 6


def uplink(dev: DeviceRepair, msg_id: int, index: int | None = None, sent: int = 0, k: int = K):
    """One uplink as the service feeds it: delivered, the fragment or poll, after_uplink."""
    dev.delivered()
    if index is None:
        dev.poll(msg_id, k, sent, P)
    else:
        dev.fragment(msg_id, index, k, P)
    return dev.after_uplink(P)


def hand_over(dev: DeviceRepair) -> list:
    cmds = dev.commands(51)
    dev.handed_over(cmds)
    return cmds


def polled_with_one_missing(dev: DeviceRepair, msg_id: int = 0, lost: tuple[int, ...] = (2,)) -> Need:
    for i in [i for i in range(K) if i not in lost]:
        assert uplink(dev, msg_id, i) == []
    uplink(dev, msg_id, None, sent=K)
    (need,) = hand_over(dev)
    assert isinstance(need, Need) and need.msg_id == msg_id
    return need


def test_a_need_not_answered_by_rows_is_due_again_two_uplinks_later():
    dev = DeviceRepair("A")
    need = polled_with_one_missing(dev)
    # the uplink whose receive windows carry the NEED: its rows can only come later
    assert uplink(dev, 1, 0) == []
    assert 0 not in dev.due
    # the next uplink is newer data, no row for message 0: the NEED was lost
    again = uplink(dev, 1, 1)
    assert again == [Need(0, need.n)] and dev.due[0] == Need(0, need.n)
    assert hand_over(dev) == [Need(0, need.n)]
    assert dev.counts["needs_repeated"] == 1
    # a repeat does not count as a repair round (the device tops the round up)
    assert dev.messages[0].needs == 1


def test_a_row_of_the_repair_means_the_need_was_heard():
    dev = DeviceRepair("A")
    polled_with_one_missing(dev, lost=(2, 3))
    assert uplink(dev, 1, 0) == []  # carries the NEED
    assert uplink(dev, 0, K) == []  # parity row 0 of message 0: the device heard it
    assert dev.messages[0].held == K - 1  # not rebuilt yet, and still nothing repeated
    assert uplink(dev, 1, 1) == [] and uplink(dev, 1, 2) == []
    assert "needs_repeated" not in dev.counts


def test_a_late_data_fragment_is_not_taken_for_the_repair():
    dev = DeviceRepair("A")
    polled_with_one_missing(dev, lost=(2, 3))
    assert uplink(dev, 1, 0) == []
    # a lost data chunk arriving late (the gateway held it): not a row of the repair
    assert [c.msg_id for c in uplink(dev, 0, 2)] == [0]


def test_a_poll_of_the_message_answers_itself():
    dev = DeviceRepair("A")
    polled_with_one_missing(dev)
    assert uplink(dev, 1, 0) == []
    assert uplink(dev, 0, None, sent=K) == []  # a poll: answered NEED by poll(), not repeated
    assert dev.due[0].msg_id == 0 and "needs_repeated" not in dev.counts


def test_repeats_are_bounded_per_message():
    dev = DeviceRepair("A")
    polled_with_one_missing(dev)
    repeated = 0
    for index in range(20):  # a device that hears nothing any more keeps sending message 1
        repeated += len([c for c in uplink(dev, 1, index) if c.msg_id == 0])
        hand_over(dev)
    assert repeated == P.repeats == dev.counts["needs_repeated"]
    none = Policy(repeats=0)
    dev = DeviceRepair("B")
    polled_with_one_missing(dev)
    for i in range(5):
        dev.delivered()
        dev.fragment(1, i, K, none)
        assert dev.after_uplink(none) == []
        dev.handed_over(dev.commands(51))


def test_no_repeat_for_a_message_the_device_no_longer_keeps():
    dev = DeviceRepair("A")
    polled_with_one_missing(dev)
    uplink(dev, 1, 0)
    # the device has moved four messages on: message 0 was evicted there
    assert all(c.msg_id != 0 for c in uplink(dev, 4, 0))
    assert 0 not in dev.due


def test_a_message_whose_polls_were_all_lost_gets_a_need_once_the_device_moves_on():
    dev = DeviceRepair("A")
    for i in [0, 1, 2, 4, 5]:
        uplink(dev, 0, i)
    # its polls never arrive; the next message's first fragment does
    (need,) = uplink(dev, 1, 0)
    assert need.msg_id == 0 and need.n >= 1
    assert dev.messages[0].needs == 1  # a new round on the device
    # a rebuilt message is never asked for
    dev = DeviceRepair("B")
    for i in range(K):
        uplink(dev, 0, i)
    assert uplink(dev, 1, 0) == []


def test_an_acked_message_polled_again_is_acked_again():
    dev = DeviceRepair("A")
    for i in range(K):
        uplink(dev, 0, i)
    assert uplink(dev, 0, None, sent=K) == [] and dev.due[0] == Ack(0)
    hand_over(dev)
    uplink(dev, 1, 0)  # the ACK went out after this uplink ...
    assert 0 not in dev.due
    uplink(dev, 0, None, sent=K)  # ... and was lost: the device polls again
    assert dev.due[0] == Ack(0)


def test_the_lost_answer_state_survives_json():
    dev = DeviceRepair("A")
    polled_with_one_missing(dev)
    uplink(dev, 1, 0)
    back = DeviceRepair.from_dict(json.loads(json.dumps(dev.to_dict())))
    assert back.messages[0].quiet == 1
    assert [c.msg_id for c in back.after_uplink(P)] == [0]


A = Policy(ack_repeats=3)


def rebuilt_and_acked(dev: DeviceRepair, msg_id: int = 0, policy: Policy = A) -> None:
    """Message ``msg_id`` rebuilt from its first K fragments; its early ACK handed over."""
    for i in range(K):
        dev.delivered()
        dev.fragment(msg_id, i, K, policy)
        dev.after_uplink(policy)
    assert dev.rebuilt(msg_id, policy)
    assert hand_over(dev) == [Ack(msg_id)]


def test_a_fragment_after_the_acks_receive_window_makes_the_ack_due_again():
    dev = DeviceRepair("A")
    rebuilt_and_acked(dev)
    # the uplink whose receive windows carry the ACK was sent before the device heard it
    assert uplink(dev, 0, K) == [] and 0 not in dev.due
    # a later fragment of the message: the ACK was lost, the device is sending the rest
    dev.delivered()
    assert dev.fragment(0, K + 1, K, A) is True
    assert dev.due[0] == Ack(0) and dev.counts["acks_repeated"] == 1
    assert hand_over(dev) == [Ack(0)]


def test_no_ack_repeat_when_the_device_heard_it():
    dev = DeviceRepair("A")
    rebuilt_and_acked(dev)
    assert uplink(dev, 0, K) == []  # carries the ACK
    # the device stopped: its next uplink is newer data
    for i in range(3):
        dev.delivered()
        assert dev.fragment(1, i, K, A) is False
        dev.after_uplink(A)
    assert 0 not in dev.due and "acks_repeated" not in dev.counts


def test_ack_repeats_are_bounded_per_message():
    for policy in (A, Policy(ack_repeats=0)):
        dev = DeviceRepair("A")
        rebuilt_and_acked(dev, policy=policy)
        repeated = 0
        for index in range(K, K + 20):  # a device that hears nothing keeps sending its rows
            dev.delivered()
            repeated += dev.fragment(0, index, K, policy)
            dev.after_uplink(policy)
            dev.handed_over(dev.commands(51))
        assert repeated == policy.ack_repeats == dev.counts.get("acks_repeated", 0)


def test_the_ack_wait_survives_json():
    dev = DeviceRepair("A")
    rebuilt_and_acked(dev)
    uplink(dev, 0, K)
    back = DeviceRepair.from_dict(json.loads(json.dumps(dev.to_dict())))
    back.delivered()
    assert back.fragment(0, K + 1, K, A) is True
