"""The deadline of an open v2 message follows the repair state, not a time
(docs/repair.md, "The deadline follows the repair state"): held open while the
device can still send its rows, released when 4 newer msg_ids were seen or the
collector's NEED repeats are used up, ``repair_hold`` as the outer bound; a NEED
that would be repeated for a message the reassembler already closed is answered
ACK."""

from __future__ import annotations

import json

from collector.core import wire, wire2
from collector.core.reassembly import Reassembler, Settings
from collector.core.repair import DeviceRepair, Policy
from collector.core.uplink import Uplink
from collector.core.wire2 import Ack, Need
from collector.testing.examples import example_record

DEV = "70B3D57ED005A1B2"
DATA = wire.encode_record(example_record())  # 658 bytes: k = 14 at S = 51
K = 14
T0 = 1_795_500_000_000
P = Policy()


def up(payload: bytes, dev: str = DEV) -> Uplink:
    return Uplink(dev, 17, payload, T0, data_rate="SF12BW125", region="EU868")


def frags(msg_id: int, parity: int = 2) -> list[bytes]:
    return wire2.encode_message(DATA, msg_id, 51, parity)


def polled_short(r: Reassembler, msg_id: int = 0, now: float = 0.0):
    """11 of the 16 fragments of ``msg_id``, then its poll: the message is in a round."""
    fs = frags(msg_id)
    for i in (0, 1, 2, 4, 5, 6, 8, 9, 11, 12, 15):
        assert r.feed(up(fs[i]), now).status == "accepted"
    res = r.feed(up(wire2.poll(msg_id, K, 16)), now + 10)
    (m,) = [m for m in r.open_messages() if m.msg_id == msg_id]
    return res, m


def test_held_past_the_adaptive_deadline_while_in_a_round_and_within_keep():
    r = Reassembler()
    res, m = polled_short(r)
    assert res.poll.held == 11 and m.hold == 21600.0 and r.held(DEV) == [0]
    assert r.feed(up(wire2.poll(0, K, 16)), 20.0).message.hold == 21600.0  # a poll changes nothing
    adaptive = m.deadline
    assert r.next_deadline() == 21600.0 > adaptive
    assert r.expire(adaptive + 1) == []  # today it would close here, 11/14
    # the device's next three records: still within the 4 messages it keeps
    for msg_id in (1, 2, 3):
        assert r.feed(up(frags(msg_id)[0]), adaptive + 100 * msg_id).released == []
    assert r.expire(adaptive + 400) == [] and 0 in r.held(DEV)
    # the repeated NEED was heard: its rows rebuild the message, with its first fragments
    fs = frags(0, parity=6)
    closed = [c for i in (16, 17, 18) for c in r.feed(up(fs[i]), adaptive + 500).closed]
    assert [(c.uid, c.close_reason, len(c.fragments)) for c in closed] == [(m.uid, "complete", 14)]
    assert 0 not in r.held(DEV)


def test_released_once_four_newer_msg_ids_were_seen():
    r = Reassembler()
    _, m = polled_short(r, msg_id=254)  # across the msg_id wrap
    for n, msg_id in enumerate((255, 0, 1)):
        assert r.feed(up(frags(msg_id)[0]), 100.0 + n).released == []
    res = r.feed(up(frags(2)[0]), 200.0)  # the device no longer keeps 254
    assert res.released == [m] and m.hold is None and m.released and r.held(DEV) == [0, 1, 2, 255]
    # not earlier than its own adaptive deadline ...
    assert r.next_deadline() == m.deadline and r.expire(m.deadline - 1) == []
    # ... and at the first deadline pass after it
    assert [c.uid for c in r.expire(m.deadline + 1)] == [m.uid]
    assert m.close_reason == "deadline"


def test_a_late_release_closes_at_the_next_deadline_pass():
    r = Reassembler()
    _, m = polled_short(r)
    late = m.deadline + 7000
    for msg_id in (1, 2, 3):
        r.feed(up(frags(msg_id)[0]), late)
    assert r.feed(up(frags(4)[0]), late).released == [m]
    assert r.next_deadline() == m.deadline < late
    assert [c.uid for c in r.expire(late)] == [m.uid]


def test_closed_at_repair_hold_when_the_device_falls_silent():
    r = Reassembler(Settings(repair_hold=10_000))
    _, m = polled_short(r)
    assert r.expire(9_999) == []
    assert [c.uid for c in r.expire(10_000)] == [m.uid]


def test_a_message_whose_polls_were_all_lost_is_held_too():
    # the repair state NEEDs it once the device moves on (docs/repair.md, "Lost answers")
    r = Reassembler()
    fs = frags(0)
    for i in (0, 1, 2, 3, 12, 13):
        r.feed(up(fs[i]), 0.0)
    (m,) = r.open_messages()
    assert m.hold == 21600.0 and r.expire(m.deadline + 1) == []
    # parity rows that come after the adaptive deadline (a device sending many, or a
    # long burst of loss in between) still join it
    big = wire2.encode_message(DATA, 0, 51, 12)
    assert r.feed(up(big[24]), m.deadline + 20).message is m


def test_release_by_the_repair_state_and_never_held_again():
    r = Reassembler()
    _, m = polled_short(r)
    assert r.release(DEV, [7]) == [] and r.release("OTHER") == []
    assert r.release(DEV, [0]) == [m] and not r.held(DEV)
    # a later round (the device polls again after more rows) gets its normal extension only
    r.feed(up(wire2.poll(0, K, 20)), m.deadline - 1)
    assert m.hold is None and r.next_deadline() == m.deadline


def test_a_late_fragment_from_beyond_keep_is_not_held_and_fixed_is_never_held():
    r = Reassembler()
    for msg_id in (1, 2, 3, 4):
        r.feed(up(frags(msg_id)[0]), 1.0)
    res = r.feed(up(frags(0)[5]), 2.0)
    assert res.message.hold is None and res.message.released and r.held(DEV) == [1, 2, 3, 4]
    r = Reassembler(Settings(deadline_policy="fixed", message_timeout=21600))
    _, m = polled_short(r)
    assert m.hold is None and r.held(DEV) == []


def test_the_hold_and_its_release_survive_a_restart():
    r = Reassembler()
    _, m = polled_short(r)

    def restart(r: Reassembler) -> Reassembler:
        state = [json.loads(json.dumps(x.to_dict())) for x in r.open_messages() + r.recent_messages()]
        r2 = Reassembler()
        r2.load(state, r.next_seq)
        return r2

    r2 = restart(r)
    (m2,) = [x for x in r2.open_messages() if x.msg_id == 0]
    assert (m2.hold, m2.deadline, r2.held(DEV), r2.next_deadline()) == (m.hold, m.deadline, [0], m.hold)
    # the newest msg_id is learnt back from what is stored: 3 newer ones ...
    for msg_id in (1, 2, 3):
        r2.feed(up(frags(msg_id)[0]), 100.0)
    r3 = restart(r2)
    assert r3.held(DEV) == [0, 1, 2, 3]
    # ... and the fourth releases it, as before the restart
    assert [x.uid for x in r3.feed(up(frags(4)[0]), 200.0).released] == [m.uid]
    r4 = restart(r3)
    (m4,) = [x for x in r4.open_messages() if x.msg_id == 0]
    assert m4.released and m4.hold is None and r4.next_deadline() == m.deadline


# ------------------------------------------------------------------ the repair state's side


def uplink(dev: DeviceRepair, msg_id: int, index: int | None = None, sent: int = 0, is_open=None):
    dev.delivered()
    if index is None:
        dev.poll(msg_id, K, sent, P)
    else:
        dev.fragment(msg_id, index, K, P)
    return dev.after_uplink(P, is_open)


def hand_over(dev: DeviceRepair) -> list:
    cmds = dev.commands(51)
    dev.handed_over(cmds)
    return cmds


def need_lost(dev: DeviceRepair) -> Need:
    for i in range(K - 3):
        uplink(dev, 0, i)
    uplink(dev, 0, None, sent=16)
    (need,) = hand_over(dev)
    assert isinstance(need, Need)
    uplink(dev, 1, 0)  # its receive windows carried the NEED (lost)
    return need


def test_closed_ack_instead_of_a_repeated_need():
    dev = DeviceRepair("A")
    need_lost(dev)
    # the next uplink shows the NEED was not heard; the reassembler has closed message 0
    assert uplink(dev, 1, 1, is_open=lambda i: i != 0) == [Ack(0)]
    assert hand_over(dev) == [Ack(0)]
    assert dev.messages[0].acked and "needs_repeated" not in dev.counts
    # nothing more for it, however many uplinks follow
    for i in range(2, 10):
        assert uplink(dev, 1, i, is_open=lambda i: i != 0) == []
    # still open: the NEED is repeated as before
    dev = DeviceRepair("B")
    need = need_lost(dev)
    assert uplink(dev, 1, 1, is_open=lambda i: True) == [Need(0, need.n)]


def test_exhausted_once_the_repeats_are_used_up_and_not_before():
    dev = DeviceRepair("A")
    need_lost(dev)
    first = None
    for i in range(1, 30):  # a device that hears nothing any more
        uplink(dev, 1, i)
        if first is None and dev.exhausted():
            first = i
            assert dev.counts["needs_repeated"] == P.repeats  # not before the last repeat went unheard
        hand_over(dev)
    assert first is not None and dev.exhausted() == [0]
    assert DeviceRepair.from_dict(json.loads(json.dumps(dev.to_dict()))).exhausted() == [0]
    # rows of the last repeat arriving: heard, not exhausted
    dev = DeviceRepair("B")
    need_lost(dev)
    for i in range(1, 30):
        uplink(dev, 1, i)
        if hand_over(dev) and dev.counts.get("needs_repeated") == P.repeats:
            break
    uplink(dev, 1, i + 1)  # carries the last repeat
    uplink(dev, 0, 16)  # a row of it
    for j in range(i + 2, i + 6):
        uplink(dev, 1, j)
    assert dev.exhausted() == []
