"""The collector's repair state (collector.core.repair) and the device
(collector.core.device) fed hostile but well-formed input: absurd ``sent`` in polls,
parity rows far beyond anything asked for, NEEDs for evicted messages, REDUNDANCY
out of range."""

from __future__ import annotations

from collector.core import wire2
from collector.core.device import Device
from collector.core.repair import DeviceRepair, Policy

P = Policy()


def healthy(d: DeviceRepair, first: int, n: int, k: int = 6, r: int = 2) -> None:
    for mid in range(first, first + n):
        for i in range(k + r):
            d.fragment(mid, i, k, P)
        assert d.poll(mid, k, k + r, P, True) == wire2.Ack(mid)


def test_one_poll_with_an_absurd_sent_does_not_wreck_the_devices_redundancy():
    """A device can have sent its k data chunks, at most 32 planned parity rows and
    the rows NEEDs asked for: a poll claiming 250 (a firmware bug) is not 244 lost
    fragments, which would steer the device to 32 parity rows for hundreds of
    messages."""
    d = DeviceRepair("X")
    healthy(d, 0, 10)
    r_before = d.r_wanted
    for i in range(4):
        d.fragment(10, i, 6, P)
    ans = d.poll(10, 6, 250, P, False)
    assert isinstance(ans, wire2.Need) and ans.n >= 2  # the message itself is still repaired
    assert d.loss(P) < 0.5
    healthy(d, 11, 20)
    # it counts as at most a burst of 32 lost (k + 32 rows is all a device plans),
    # forgotten like any burst; counted as 244 lost it kept r near 32 here
    assert d.r_wanted is not None and d.r_wanted <= max(r_before or 0, 6), d.r_wanted


def test_a_parity_row_far_beyond_anything_sent_is_not_counted_as_hundreds_lost():
    d = DeviceRepair("X")
    healthy(d, 0, 10)
    d.fragment(10, 254, 6, P)  # valid on the wire (parity row 248), absurd for a device with r = 2
    assert d.loss(P) < 0.5


def test_the_device_ignores_need_for_evicted_and_redundancy_out_of_range():
    dev = Device(parity=0, polls=1, rounds=3, keep=2)
    rec = bytes(range(40))
    ids = [dev.submit(rec, 24, 0.0) for _ in range(3)]
    t = 0.0
    while (p := dev.next_uplink(t)) is not None:
        t += 1.0
    assert ids == [0, 1, 2]
    # msg 0 was evicted by msg 2 (keep = 2): a NEED for it is ignored, nothing is sent
    dev.downlink(wire2.encode_downlink([wire2.Need(0, 3)]), t)
    assert dev.next_uplink(t) is None and dev.stats.ignored >= 1
    # REDUNDANCY 33 is skipped (its length is known), the ACK after it is read
    dev.downlink(bytes((3, 33, 1, 2)), t)
    assert dev.stats.acked == 1
    dev.submit(rec, 24, t)
    sent = []
    while (p := dev.next_uplink(t)) is not None:
        sent.append(p)
        t += 1.0
    assert [p[1] for p in sent][-1] == wire2.POLL and all(p[1] < p[2] for p in sent[:-1])  # still r = 0
    # an unknown command byte ends the downlink: REDUNDANCY after it is not applied
    dev.downlink(bytes((9, 3, 5)), t)
    dev.submit(rec, 24, t)
    sent = []
    while (p := dev.next_uplink(t)) is not None:
        sent.append(p)
        t += 1.0
    assert all(p[1] < p[2] for p in sent[:-1])


def test_a_repeated_poll_is_not_a_new_repair_round():
    """The same poll twice (a network-server retry, or the device polling again because
    the NEED's downlink was lost) is one repair round, as /api/messages/{id} shows it;
    a poll after the device sent the rows asked for starts the next one."""
    d = DeviceRepair("X")
    for i in range(4):
        d.fragment(3, i, 6, P)
    first = d.poll(3, 6, 8, P, False)
    again = d.poll(3, 6, 8, P, False)
    assert isinstance(first, wire2.Need) and again == first
    assert d.messages[3].needs == 1 and d.messages[3].asked == first.n
    d.fragment(3, 8, 6, P)  # one of the rows asked for arrived
    d.poll(3, 6, 8 + first.n, P, False)
    assert d.messages[3].needs == 2
