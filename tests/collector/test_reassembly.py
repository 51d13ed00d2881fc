"""The reassembly state machine and the outcome of each message (wire-format.md §3)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.core import wire
from collector.core.assemble import assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.core.xmldoc import Transport, build_document
from collector.testing.examples import example_record

from .conftest import records, sizes_for

DEV = "70B3D57ED005A1B2"


def up(payload: bytes, t_ms: int = 1_795_500_000_000, dev: str = DEV, dr: str | None = "SF12BW125",
       fport: int = 16) -> Uplink:
    return Uplink(dev, fport, payload, t_ms, data_rate=dr)


def feed_all(r: Reassembler, payloads, now: float = 0.0):
    closed = []
    for i, p in enumerate(payloads):
        closed += r.feed(up(p, 1_795_500_000_000 + i), now).closed
    return closed


# ---------------------------------------------------------------- properties


@settings(max_examples=60, deadline=None)
@given(records(), st.data())
def test_any_permutation_with_duplicates_gives_the_identical_record_and_document(rec, d):
    data = wire.encode_record(rec)
    size = d.draw(sizes_for(len(data)))
    frags = wire.fragment(5, data, size)
    order = d.draw(st.permutations(frags + d.draw(st.lists(st.sampled_from(frags), max_size=4))))
    r = Reassembler()
    closed, statuses = [], []
    for i, p in enumerate(order):
        res = r.feed(up(p, 1000 + i), now=float(i))
        statuses.append(res.status)
        closed += res.closed
    assert statuses.count("accepted") == len(frags)
    assert len(closed) == 1 and closed[0].close_reason == "complete"
    out = assemble(closed[0])
    assert out.kind == "document" and out.complete
    assert out.record == rec
    accepted_at = [1000 + i for i, s in enumerate(statuses) if s == "accepted"]
    expected = build_document(rec, DEV, Transport(5, len(frags), len(frags), accepted_at[0], accepted_at[-1]), True)
    assert out.xml == expected
    assert r.open_messages() == []


def _expected_outcome(rec: wire.Record, data: bytes, size: int, delivered: set[int]):
    """What §3 prescribes, computed straight from the spec's arithmetic."""
    n = wire.fragment_count(len(data), size)
    covered = set()
    for i in delivered:
        start = 0 if i == 0 else (size - 3) + (i - 1) * (size - 2)
        end = min(len(data), start + (size - 3 if i == 0 else size - 2))
        covered.update(range(start, end))
    if 0 not in delivered:
        return "incident", "fragment0_missing", None
    req = wire.required_length(len(rec.channels), rec.sample_count)
    if not set(range(req)) <= covered:
        return "incident", "required_missing", None
    missing_blocks, pos = [], req
    for name, block_size, block in zip(wire.BLOCK_NAMES, wire.BLOCK_SIZES, rec.blocks, strict=True):
        if block is None:
            continue
        if not set(range(pos, pos + block_size)) <= covered:
            missing_blocks.append(name)
        pos += block_size
    return "document", [i for i in range(n) if i not in delivered], missing_blocks


@settings(max_examples=80, deadline=None)
@given(records(max_samples=12), st.data())
def test_any_loss_pattern_gives_exactly_the_prescribed_outcome(rec, d):
    data = wire.encode_record(rec)
    size = d.draw(sizes_for(len(data)))
    frags = wire.fragment(9, data, size)
    n = len(frags)
    delivered = d.draw(st.sets(st.integers(0, n - 1), min_size=1, max_size=n))
    order = d.draw(st.permutations(sorted(delivered)))
    r = Reassembler(Settings(message_timeout=60))
    closed = []
    for i in order:
        closed += r.feed(up(frags[i]), now=0.0).closed
    if len(delivered) < n:
        assert closed == []
        closed = r.expire(r.next_deadline())
    assert len(closed) == 1
    out = assemble(closed[0])
    kind, a, b = _expected_outcome(rec, data, size, delivered)
    assert out.kind == kind, out.detail
    if kind == "incident":
        assert out.code == a and out.detail
        assert sorted(f["index"] for f in out.fragments) == sorted(delivered)
        return
    assert out.missing_fragments == a and out.missing_blocks == b
    assert out.complete == (not a)
    xml = out.xml.decode()
    assert ('complete="true"' in xml) == (not a)
    if a:
        assert f'missingFragments="{" ".join(map(str, a))}"' in xml
    if b:
        assert f'missingBlocks="{" ".join(b)}"' in xml
    # what did arrive is decoded faithfully
    for name, block in zip(wire.BLOCK_NAMES, rec.blocks, strict=True):
        got = getattr(out.record, name)
        assert got == (None if name in b else block)
    assert out.record.channels == rec.channels


# ---------------------------------------------------------------- rules


def example_frags(size: int = 51, msg_id: int = 17, **kw) -> list[bytes]:
    return wire.fragment(msg_id, wire.encode_record(example_record(**kw)), size)


def test_duplicates_change_nothing_also_shortly_after_close():
    r = Reassembler()
    frags = example_frags()
    assert len(feed_all(r, frags)) == 1
    res = r.feed(up(frags[3]), now=10.0)
    assert res.status == "duplicate" and res.closed == [] and r.open_messages() == []


def test_a_different_fragment_for_a_held_index_closes_and_restarts():
    r = Reassembler()
    old = example_frags(11, samples=8)  # 13 fragments; the required section is in 0..6
    new = example_frags(11, samples=6)  # same msg_id, another record
    feed_all(r, old[:8])
    res = r.feed(up(new[2]), now=5.0)
    assert res.status == "accepted"
    assert [m.close_reason for m in res.closed] == ["conflict"]
    assert len(r.open_messages()) == 1 and set(r.open_messages()[0].fragments) == {2}
    out = assemble(res.closed[0])
    assert out.kind == "document" and not out.complete and out.missing_fragments == list(range(8, 13))


def test_a_fragment_that_cannot_belong_to_the_message_starts_a_new_one():
    r = Reassembler()
    small = wire.fragment(1, wire.encode_record(example_record(samples=4, blocks=False)), 51)  # 1 fragment? no
    assert len(small) == 1
    frags = example_frags(msg_id=1)
    feed_all(r, frags[1:3])  # fragment 0 not yet: count unknown
    res = r.feed(up(small[0]), now=1.0)  # count 1, but fragments 1 and 2 are held
    assert [m.close_reason for m in res.closed] == ["conflict", "complete"]
    assert assemble(res.closed[1]).complete


def test_a_closed_msg_id_with_new_bytes_starts_a_new_message():
    r = Reassembler()
    feed_all(r, example_frags(msg_id=3))
    other = example_frags(msg_id=3, samples=100)
    res = r.feed(up(other[1]), now=20.0)
    assert res.status == "accepted" and res.message.uid.endswith("-2")


def test_late_fragment_after_deadline_is_a_duplicate_or_a_new_message():
    r = Reassembler(Settings(message_timeout=60, deadline_policy="fixed"))
    frags = example_frags()
    feed_all(r, frags[:10])
    (m,) = r.expire(60.0)
    assert m.close_reason == "deadline"
    assert r.feed(up(frags[4]), now=70.0).status == "duplicate"
    res = r.feed(up(frags[12]), now=71.0)
    assert res.status == "accepted" and res.message.uid != m.uid
    # after the duplicate window the same bytes open a new message
    r.expire(71.0 + 3601)
    assert r.feed(up(frags[4]), now=71.0 + 3602).status == "accepted"


def test_fixed_deadline_is_exactly_the_timeout_after_the_first_fragment():
    r = Reassembler(Settings(message_timeout=120, deadline_policy="fixed"))
    frags = example_frags()
    r.feed(up(frags[5]), now=1000.0)
    r.feed(up(frags[0]), now=1500.0)
    assert r.next_deadline() == 1120.0
    assert r.expire(1119.9) == []
    assert len(r.expire(1120.0)) == 1


def test_adaptive_deadline_does_not_cut_off_a_slow_sf12_device():
    """A 14-fragment EU868 DR0 message under 1 % duty cycle takes about an hour."""
    r = Reassembler(Settings(message_timeout=900))
    frags = example_frags(51)
    airtime = 2.793  # s, one 51-byte frame at SF12 (64-byte PHY payload)
    t = 0.0
    closed = []
    for f in frags:
        closed += r.feed(up(f, dr="SF12BW125"), now=t).closed
        closed += r.expire(t)
        t += airtime / 0.01
    assert [m.close_reason for m in closed] == ["complete"]
    assert t > 3600  # it really took about an hour


def test_adaptive_deadline_never_earlier_than_the_timeout():
    r = Reassembler(Settings(message_timeout=900))
    r.feed(up(example_frags(242)[0], dr="SF7BW125"), now=0.0)
    assert r.next_deadline() == 900.0


def test_unknown_data_rate_assumes_the_slowest():
    r = Reassembler(Settings(message_timeout=60))
    r.feed(up(example_frags(51)[0], dr=None), now=0.0)
    assert r.next_deadline() > 3600


def test_other_fports_are_ignored_and_bad_headers_raise():
    r = Reassembler()
    res = r.feed(up(b"\x01\x02\x03", fport=1), now=0)
    assert res.status == "ignored" and "fPort 1" in res.reason
    with pytest.raises(wire.FragmentError):
        r.feed(up(b"\x01\x00\x00\x05"), now=0)


def test_open_message_cap_per_device_evicts_the_oldest():
    r = Reassembler(Settings(max_open_per_device=3))
    closed = []
    for msg_id in range(5):
        closed += r.feed(up(example_frags(msg_id=msg_id)[0]), now=float(msg_id)).closed
    assert [m.msg_id for m in closed] == [0, 1]
    assert all(m.close_reason == "evicted" for m in closed)
    assert len(r.open_messages()) == 3
    # other devices are not affected
    r.feed(up(example_frags()[0], dev="0000000000000001"), now=9.0)
    assert len(r.open_messages()) == 4


def test_total_open_message_cap():
    r = Reassembler(Settings(max_open_total=10))
    for i in range(25):
        r.feed(up(example_frags()[0], dev=f"{i:016X}"), now=float(i))
    assert len(r.open_messages()) == 10


def test_state_is_plain_data_and_survives_a_restart():
    s = Settings(message_timeout=300)
    r = Reassembler(s)
    frags = example_frags()
    feed_all(r, frags[:6])
    feed_all(r, example_frags(msg_id=4)[:2])
    saved = json.loads(json.dumps([m.to_dict() for m in r.open_messages() + r.recent_messages()]))
    r2 = Reassembler(s)
    r2.load(saved, r.next_seq)
    assert r2.next_deadline() == r.next_deadline()
    for f in frags[6:]:
        res = r2.feed(up(f), now=10.0)
    assert res.closed and assemble(res.closed[0]).record == example_record()
    assert r2.feed(up(frags[0]), now=11.0).status == "duplicate"


@pytest.mark.parametrize("bad_index", [1, 2])
def test_assembly_rechecks_fragment_lengths_of_a_restored_message(bad_index):
    """A message restored from storage skips the reassembler's checks; assembly still
    refuses fragments whose lengths contradict S (a short middle one, a long last one)."""
    from collector.core.reassembly import Held, Message

    frags = example_frags(43, samples=10)  # 122 bytes: three fragments of exactly S=43
    assert [len(f) for f in frags] == [43, 43, 43]
    m = Message("u", DEV, 17, 0.0, 0.0, count=3, size=43, closed=1.0, close_reason="complete")
    for i, p in enumerate(frags):
        if i == bad_index:
            p = p[:-1] if i == 1 else p + b"\0"
        m.fragments[i] = Held(i, p, up(p), 0.0)
    out = assemble(m)
    assert out.kind == "incident" and out.code == "length"
    assert f"fragment {bad_index} is" in out.detail


def test_a_closed_message_is_remembered_by_its_payloads_only():
    """Memory per remembered message is its payload bytes (shared with the uplinks),
    not the uplinks, their metadata or the parsed fragments."""
    from collector.core.reassembly import Recent

    r = Reassembler()
    frags = example_frags()
    ups = [up(f) for f in frags]
    for u in ups:
        r.feed(u, 0.0)
    (rec,) = r.recent_messages()
    assert isinstance(rec, Recent)
    assert all(rec.payloads[i] is u.payload for i, u in enumerate(ups))
    assert Recent.from_dict(json.loads(json.dumps(rec.to_dict()))) == rec


def test_forgetting_stale_closed_messages_stops_at_the_first_fresh_one():
    r = Reassembler(Settings(duplicate_window=100))
    for t, msg_id in enumerate(range(5)):
        r.feed(up(example_frags(242, msg_id=msg_id, samples=4, blocks=False)[0]), float(t * 50))
    assert len(r.recent_messages()) == 5  # closed at 0, 50, 100, 150, 200
    r.expire(200.0)  # the window reaches back to 100: that one stays
    assert [m.msg_id for m in r.recent_messages()] == [2, 3, 4]


def test_without_fragment_0_a_slow_message_is_not_split_in_two():
    """Fragment 0 lost: the count is unknown, so the deadline allows for the device's
    previous message size (or the largest record), and the rest of the message still
    lands in one message, one incident."""
    for previous in (True, False):
        r = Reassembler(Settings(message_timeout=900))
        if previous:
            feed_all(r, example_frags(msg_id=16))
        frags = example_frags()
        t, closed = 100_000.0, []
        for f in frags[1:]:
            closed += r.feed(up(f, dr="SF12BW125"), now=t).closed
            closed += r.expire(t)
            t += 2.793 / 0.01
        closed += r.expire(t + 10**6)
        assert len(closed) == 1 and sorted(closed[0].fragments) == list(range(1, 14))
        assert assemble(closed[0]).code == "fragment0_missing"


def test_a_held_short_fragment_tells_the_count():
    r = Reassembler(Settings(message_timeout=60))
    frags = example_frags()
    us = [Uplink(DEV, 16, f, 0, data_rate="SF7BW125", region="US915") for f in frags]  # no duty cycle
    r.feed(us[13], now=0.0)
    r.feed(us[12], now=0.0)  # now S is known: 13 is short, the last
    m = r.open_messages()[0]
    assert m.short == 13 and m.basis[1] == 14
    assert r.next_deadline() == 60.0  # 14 SF7 frames need far less than the timeout


def test_fragments_implying_a_size_below_4_do_not_break_the_deadline():
    """Two 3-byte fragments (S would be 3, which the contract forbids) are accepted
    into one message like any other and end as an incident, never an exception."""
    r = Reassembler()
    assert r.feed(up(bytes([1, 1, 9])), 0.0).status == "accepted"
    assert r.feed(up(bytes([1, 2, 9])), 0.0).status == "accepted"
    (m,) = r.expire(float("inf"))
    assert assemble(m).kind == "incident"
