"""The v2 device state machine (wire-format-v2.md §4), one transition per test."""

from __future__ import annotations

import pytest

from collector.core import wire2
from collector.core.device import Device, DeviceError

RECORD = bytes(range(1, 31))  # k = 4 at S = 12 (the spec's worked example)
ACK = wire2.Ack
NEED = wire2.Need


def drain(dev: Device, now: float = 0.0, limit: int = 300) -> list[bytes]:
    out = []
    while (p := dev.next_uplink(now)) is not None:
        out.append(p)
        assert len(out) < limit
    return out


def kinds(payloads: list[bytes]) -> list[str]:
    out = []
    for p in payloads:
        f = wire2.parse_v2(p)
        out.append("P" if isinstance(f, wire2.V2Poll) else f"{f.msg_id}:{f.index}")
    return out


def dl(*cmds) -> bytes:
    return wire2.encode_downlink(list(cmds))


def test_message_is_data_then_parity_then_polls():
    dev = Device(parity=2, polls=3)
    assert dev.idle
    assert dev.submit(RECORD, 12, 0.0) == 0
    assert not dev.idle
    sent = drain(dev)
    assert sent[:6] == wire2.encode_message(RECORD, 0, 12, 2)
    assert sent[6:] == [wire2.poll(0, 4, 6)] * 3
    assert dev.idle and dev.next_uplink(1.0) is None
    s = dev.stats
    assert (s.data_sent, s.parity_sent, s.polls_sent) == (4, 2, 3)
    assert dev.message(0).phase == "waiting"  # still held for a late NEED


def test_ack_stops_polls_and_forgets():
    dev = Device()
    dev.submit(RECORD, 12, 0.0)
    for _ in range(7):
        dev.next_uplink(0.0)  # 6 fragments and the first poll
    dev.downlink(dl(ACK(0)), 1.0)
    assert dev.message(0) is None and dev.idle
    assert dev.next_uplink(2.0) is None
    assert dev.stats.acked == 1 and dev.stats.polls_sent == 1


def test_ack_while_sending_forgets_at_once():
    dev = Device()
    dev.submit(RECORD, 12, 0.0)
    dev.next_uplink(0.0)
    dev.downlink(dl(ACK(0)), 0.5)
    assert dev.next_uplink(1.0) is None and dev.stats.data_sent == 1


def test_need_sends_next_rows_not_sent_then_polls_again():
    dev = Device(parity=2)
    dev.submit(RECORD, 12, 0.0)
    for _ in range(7):
        dev.next_uplink(0.0)
    dev.downlink(dl(NEED(0, 2)), 1.0)
    after = drain(dev, 2.0)
    assert after[:2] == [wire2.parity_fragment(RECORD, 0, 12, 2), wire2.parity_fragment(RECORD, 0, 12, 3)]
    assert after[2:] == [wire2.poll(0, 4, 8)] * 3  # sent counts every distinct fragment
    assert dev.stats.needs_served == 1 and dev.stats.repair_sent == 2


def test_rounds_are_bounded_then_the_message_is_given_up():
    dev = Device(parity=0, polls=1, rounds=2)
    dev.submit(RECORD, 12, 0.0)
    drain(dev)
    for rnd in range(2):
        dev.downlink(dl(NEED(0, 1)), 1.0 + rnd)
        assert kinds(drain(dev, 1.0 + rnd)) == [f"0:{4 + rnd}", "P"]
    # the last round's polls are spent: nothing more could be served
    assert dev.message(0) is None and dev.stats.given_up == 1
    dev.downlink(dl(NEED(0, 1)), 5.0)
    assert dev.next_uplink(5.0) is None and dev.stats.ignored == 1


def test_need_beyond_rounds_forgets_the_message():
    dev = Device(parity=0, polls=3, rounds=1)
    dev.submit(RECORD, 12, 0.0)
    for _ in range(5):
        dev.next_uplink(0.0)  # 4 data, 1 poll
    dev.downlink(dl(NEED(0, 1)), 1.0)
    assert kinds([dev.next_uplink(1.0), dev.next_uplink(1.0)]) == ["0:4", "P"]
    dev.downlink(dl(NEED(0, 1)), 2.0)
    assert dev.message(0) is None and dev.stats.given_up == 1 and dev.next_uplink(2.0) is None


def test_repeated_need_before_the_next_poll_is_the_same_round():
    dev = Device(parity=0, polls=1, rounds=3)
    dev.submit(RECORD, 12, 0.0)
    drain(dev)
    dev.downlink(dl(NEED(0, 2)), 1.0)
    dev.next_uplink(1.0)
    dev.downlink(dl(NEED(0, 2)), 1.5)  # the network server delivered it twice
    assert kinds(drain(dev, 2.0)) == ["0:5", "P"]
    assert dev.stats.needs_served == 1 and dev.stats.needs_merged == 1
    assert dev.message(0).rounds == 1
    dev.downlink(dl(NEED(0, 3)), 3.0)  # a bigger one merged before any poll: more rows
    dev.next_uplink(3.0)
    dev.downlink(dl(NEED(0, 3)), 3.5)
    assert kinds(drain(dev, 4.0)) == ["0:7", "0:8", "P"]


def test_need_while_still_sending_adds_rows_without_a_round():
    dev = Device(parity=1)
    dev.submit(RECORD, 12, 0.0)
    dev.next_uplink(0.0)
    dev.downlink(dl(NEED(0, 3)), 0.1)  # before any poll: merged, rows beyond the planned one
    assert kinds(drain(dev, 1.0)) == ["0:1", "0:2", "0:3", "0:4", "0:5", "0:6", "0:7", "P", "P", "P"]
    assert dev.message(0).rounds == 0


def test_need_when_rows_run_out_polls():
    dev = Device(parity=0, polls=1)
    dev.submit(bytes(250), 5, 0.0)  # k = 250: rows 0..4 exist
    drain(dev)
    dev.downlink(dl(NEED(0, 9)), 1.0)
    assert kinds(drain(dev, 1.0)) == ["0:250", "0:251", "0:252", "0:253", "0:254", "P"]
    dev.downlink(dl(NEED(0, 1)), 2.0)
    assert kinds(drain(dev, 2.0)) == ["P"]


def test_commands_for_messages_not_held_are_ignored():
    dev = Device()
    dev.downlink(dl(ACK(9), NEED(9, 2)), 0.0)
    assert dev.stats.ignored == 2 and dev.idle


def test_redundancy_applies_from_the_next_message_on():
    dev = Device(parity=2, polls=1)
    dev.submit(RECORD, 12, 0.0)
    dev.submit(RECORD, 12, 0.0)
    dev.next_uplink(0.0)  # message 0 has started with r = 2
    dev.downlink(dl(wire2.Redundancy(0)), 0.5)
    sent = kinds(drain(dev, 1.0))
    assert sent == ["0:1", "0:2", "0:3", "0:4", "0:5", "P", "1:0", "1:1", "1:2", "1:3", "P"]
    assert dev.parity == 0 and dev.stats.redundancy_changes == 1


def test_polls_come_before_the_next_message_and_repairs_before_new_data():
    dev = Device(parity=0, polls=2)
    dev.submit(RECORD, 12, 0.0)
    dev.submit(RECORD, 12, 0.0)
    first = kinds([dev.next_uplink(0.0) for _ in range(7)])
    # message 0's polls (no answer came) before message 1 starts
    assert first == ["0:0", "0:1", "0:2", "0:3", "P", "P", "1:0"]
    dev.downlink(dl(NEED(0, 1)), 1.0)
    rest = [(p[0], p[1]) for p in drain(dev, 1.0)]
    # message 0's repair row and the first poll of its round before message 1's data;
    # then message 1's first poll, then the repeated polls, oldest message first
    assert rest == [(0, 4), (0, 255), (1, 1), (1, 2), (1, 3), (1, 255), (0, 255), (1, 255)]


def test_a_repeated_poll_waits_for_its_interval_while_new_data_goes_out():
    dev = Device(parity=0, polls=2, poll_interval=100.0)
    dev.submit(RECORD, 12, 0.0)
    dev.submit(RECORD, 12, 0.0)
    sent = kinds([dev.next_uplink(0.0) for _ in range(9)])
    assert sent == ["0:0", "0:1", "0:2", "0:3", "P", "1:0", "1:1", "1:2", "1:3"]
    assert [(p[0], p[1]) for p in drain(dev, 0.0)] == [(1, 255)]  # message 1's first poll
    assert [(p[0], p[1]) for p in drain(dev, 100.0)] == [(0, 255), (1, 255)]


def test_keeps_the_last_four_messages():
    dev = Device(parity=0, polls=1, keep=4)
    for i in range(6):
        dev.submit(RECORD, 12, float(i))
    drain(dev, 10.0)
    assert [m.msg_id for m in dev.held] == [2, 3, 4, 5]
    assert dev.stats.evicted == 2
    dev.downlink(dl(NEED(0, 1)), 11.0)  # evicted: ignored
    assert dev.stats.ignored == 1 and dev.next_uplink(11.0) is None


def test_msg_id_wraps():
    dev = Device(first_msg_id=255)
    assert dev.submit(RECORD, 12, 0.0) == 255
    assert dev.submit(RECORD, 12, 0.0) == 0


def test_poll_interval_spaces_repeated_polls():
    dev = Device(parity=0, polls=2, poll_interval=60.0)
    dev.submit(RECORD, 12, 0.0)
    assert kinds(drain(dev, 0.0)) == ["0:0", "0:1", "0:2", "0:3", "P"]
    assert dev.next_due(10.0) == 60.0 and not dev.idle
    assert dev.next_uplink(59.0) is None
    assert kinds([dev.next_uplink(60.0)]) == ["P"]
    assert dev.next_due(61.0) is None


@pytest.mark.parametrize("record,size,match", [
    (b"", 12, "empty record"),
    (RECORD, 4, "outside 5..242"),
    (bytes(255), 5, "at most 254"),
])
def test_illegal_submit(record, size, match):
    with pytest.raises(DeviceError, match=match):
        Device().submit(record, size, 0.0)


def test_time_must_not_go_backwards():
    dev = Device()
    dev.next_uplink(5.0)
    with pytest.raises(DeviceError, match="backwards"):
        dev.downlink(b"", 4.0)


@pytest.mark.parametrize("kwargs", [{"parity": 33}, {"polls": 0}, {"keep": 0}, {"first_msg_id": 256},
                                    {"rounds": -1}, {"poll_interval": -1.0}])
def test_bad_settings(kwargs):
    with pytest.raises(DeviceError):
        Device(**kwargs)


def test_every_uplink_is_a_valid_v2_uplink_and_the_collector_can_rebuild():
    dev = Device(parity=2)
    data = bytes(range(200))
    dev.submit(data, 51, 0.0)
    frags = [f for p in drain(dev) if isinstance(f := wire2.parse_v2(p), wire2.V2Fragment)]
    assert wire2.rebuild_record(frags[2:]) == data  # the first two lost
