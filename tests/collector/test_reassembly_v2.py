"""The reassembler with wire format v2 (wire-format-v2.md §5): rebuilt at any k
fragments, conflicts, partial documents from data chunks, polls, deadlines, restart."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.core import wire, wire2
from collector.core.assemble import assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.core.wire import FragmentError
from collector.core.xmldoc import xsd_validate
from collector.testing.examples import example_record

DEV = "70B3D57ED005A1B2"
DATA = wire.encode_record(example_record())  # 658 bytes: k = 14 at S = 51
T0 = 1_795_500_000_000


def up(payload: bytes, i: int = 0, dev: str = DEV, fport: int = 17, dr: str | None = "SF12BW125") -> Uplink:
    return Uplink(dev, fport, payload, T0 + i, data_rate=dr, region="EU868")


def message(msg_id: int = 3, size: int = 51, parity: int = 4, data: bytes = DATA) -> list[bytes]:
    return wire2.encode_message(data, msg_id, size, parity)


def feed(r: Reassembler, payloads, now: float = 0.0):
    results = [r.feed(up(p, i), now) for i, p in enumerate(payloads)]
    return results, [m for res in results for m in res.closed]


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_any_k_fragments_in_any_order_with_duplicates_rebuild_the_same_document(d):
    frags = message(parity=4)  # 14 data + 4 parity
    chosen = d.draw(st.lists(st.sampled_from(range(18)), min_size=14, max_size=14, unique=True))
    extra = d.draw(st.lists(st.sampled_from(chosen), max_size=3))
    order = d.draw(st.permutations(chosen + extra))
    r = Reassembler()
    results, closed = feed(r, [frags[i] for i in order])
    assert len(closed) == 1 and closed[0].close_reason == "complete"
    # closed at the k-th distinct fragment: whatever came after is a duplicate
    statuses = [res.status for res in results]
    assert statuses.count("accepted") == 14
    out = assemble(closed[0])
    assert out.kind == "document" and out.complete and out.missing_fragments == []
    assert wire.encode_record(out.record) == DATA
    assert out.fragments_expected == 14 and len(out.held) == 14
    assert b'complete="true"' in out.xml and b"missingFragments" not in out.xml
    assert b'fragmentsExpected="14"' in out.xml and b'fragmentsReceived="14"' in out.xml
    xsd_validate(out.xml)
    assert r.open_messages() == []


def test_rebuilt_at_once_from_parity_and_late_fragments_are_duplicates():
    frags = message(parity=2)
    r = Reassembler()
    _, closed = feed(r, frags[2:])  # data chunks 0 and 1 lost
    assert len(closed) == 1
    out = assemble(closed[0])
    assert out.complete and wire.encode_record(out.record) == DATA
    # data chunk 0 arriving late, and a parity row never sent before: both verified
    # against the rebuilt record and counted as duplicates, no new message
    late = [frags[0], wire2.parity_fragment(DATA, 3, 51, 7)]
    assert [r.feed(up(p), 1.0).status for p in late] == ["duplicate", "duplicate"]
    assert r.open_messages() == []


def test_a_new_message_reusing_the_msg_id_is_not_taken_for_a_late_fragment():
    r = Reassembler()
    _, (old,) = feed(r, message(parity=0)[1:] + message(parity=1)[14:])  # rebuilt without data chunk 0
    other = bytearray(DATA)
    other[8] ^= 1  # another record_seq: another record of the same size (same k, pad, S)
    new = wire2.encode_message(bytes(other), 3, 51, 0)
    res = r.feed(up(new[0]), 1.0)  # index 0: not held by the rebuilt message, but not its bytes
    assert res.status == "accepted" and res.message.uid != old.uid
    assert len(r.open_messages()) == 1


@pytest.mark.parametrize("bad,why", [
    (lambda f: f[:2] + bytes([13]) + f[3:], "k"),  # other k
    (lambda f: f[:3] + bytes([f[3] + 1]) + f[4:], "pad"),  # other pad
    (lambda f: f + b"\x00", "size"),  # other S
])
def test_a_contradicting_header_closes_the_message_as_a_conflict(bad, why):
    frags = message(parity=0)
    r = Reassembler()
    feed(r, frags[:5])
    res = r.feed(up(bad(frags[5])), 1.0)
    assert res.status == "accepted"
    assert [m.close_reason for m in res.closed] == ["conflict"]
    assert len(res.closed[0].fragments) == 5
    assert res.message.fragments.keys() == {5}


def test_a_different_fragment_for_a_held_index_is_a_conflict():
    frags = message(parity=0)
    r = Reassembler()
    feed(r, frags[:3])
    changed = bytearray(frags[1])
    changed[-1] ^= 0xFF
    res = r.feed(up(bytes(changed)), 1.0)
    assert [m.close_reason for m in res.closed] == ["conflict"]


def test_closed_short_gives_a_partial_document_from_the_data_chunks():
    frags = message(parity=2)
    r = Reassembler(Settings(deadline_policy="fixed", message_timeout=60))
    # data chunks 0..12 (the required section is bytes 0..605, in chunks 0..12), the
    # last data chunk and both parity rows lost: 13 of 14
    feed(r, frags[:13])
    closed = r.expire(61.0)
    assert len(closed) == 1 and closed[0].close_reason == "deadline"
    out = assemble(closed[0])
    assert out.kind == "document" and not out.complete
    assert out.missing_fragments == [13]
    assert out.fragments_expected == 14 and len(out.held) == 13
    assert b'complete="false"' in out.xml and b'missingFragments="13"' in out.xml
    assert out.missing_blocks  # the optional blocks at the end did not arrive
    xsd_validate(out.xml)


def test_closed_short_without_the_required_section_is_an_incident():
    frags = message(parity=2)
    r = Reassembler(Settings(deadline_policy="fixed", message_timeout=60))
    feed(r, frags[1:13])  # data chunk 0 lost and only 12 of 14
    (m,) = r.expire(61.0)
    out = assemble(m)
    assert out.kind == "incident" and out.code == "required_missing"
    assert "12 of the 14" in out.detail and "data chunks missing: 0, 13" in out.detail
    assert len(out.held) == 12


def test_v1_and_v2_side_by_side_for_one_device():
    r = Reassembler()
    v1 = wire.fragment(3, DATA, 51)
    v2 = message(msg_id=4, parity=0)
    closed = []
    for a, b in zip(v1, v2, strict=True):
        closed += r.feed(up(a, fport=16), 0.0).closed
        closed += r.feed(up(b), 0.0).closed
    assert sorted(m.wire for m in closed) == [1, 2]
    assert [assemble(m).complete for m in closed] == [True, True]
    assert assemble(closed[0]).record == assemble(closed[1]).record


@pytest.mark.parametrize("payload,code", [
    ("03000002 01", "v2_k"), ("07ff040600", "v2_poll_length"), ("07000401", "v2_short"),
    ("07000408 0102030405060708", "v2_pad"),
])
def test_bad_inputs_raise_before_anything_is_held(payload, code):
    r = Reassembler()
    with pytest.raises(FragmentError) as e:
        r.feed(up(bytes.fromhex(payload)), 0.0)
    assert e.value.code == code
    assert r.open_messages() == [] and r.next_seq == 1


def test_polls_report_what_is_held():
    frags = message(parity=2)
    r = Reassembler()
    feed(r, frags[:10])
    res = r.feed(up(wire2.poll(3, 14, 16)), 5.0)
    assert res.status == "poll" and res.closed == []
    ev = res.poll
    assert (ev.held, ev.need, ev.lost, ev.rebuilt, ev.closed) == (10, 4, 6, False, False)
    assert ev.uid == res.message.uid
    feed(r, frags[12:16])
    ev = r.feed(up(wire2.poll(3, 14, 16)), 6.0).poll
    assert (ev.held, ev.need, ev.rebuilt, ev.closed) == (14, 0, True, True)
    # a poll for a message never seen, or with another k
    assert r.feed(up(wire2.poll(9, 14, 16)), 6.0).poll.need == 14
    assert r.feed(up(wire2.poll(3, 13, 16)), 6.0).poll.held == 0


def test_a_poll_moves_the_deadline_for_the_repair_round():
    frags = message(parity=0)
    r = Reassembler(Settings(deadline_policy="fixed", message_timeout=100, repair_extensions=2))
    feed(r, frags[:10])
    (m,) = r.open_messages()
    assert m.deadline == 100.0
    assert r.feed(up(wire2.poll(3, 14, 14)), 90.0).poll.extended
    assert m.deadline == 190.0
    # the same round polled again: no more time
    assert not r.feed(up(wire2.poll(3, 14, 14)), 95.0).poll.extended
    # the device sent more rows and polls again: a new round
    assert r.feed(up(wire2.poll(3, 14, 16)), 150.0).poll.extended and m.deadline == 250.0
    # bounded: a device polling forever cannot hold a message open forever
    assert not r.feed(up(wire2.poll(3, 14, 18)), 240.0).poll.extended
    assert [x.close_reason for x in r.expire(250.0)] == ["deadline"]


def test_adaptive_deadline_covers_the_data_rate():
    r = Reassembler()
    feed(r, message(parity=0)[:1])
    (m,) = r.open_messages()
    # 14 data + 2 parity + a poll at SF12, 51 bytes, 1 % duty cycle: about an hour, times 1.5
    assert 4500 < m.deadline < 7200


def test_open_v2_messages_survive_a_restart():
    frags = message(parity=2)
    r = Reassembler()
    feed(r, frags[:9])
    state = [json.loads(json.dumps(m.to_dict())) for m in r.open_messages()]
    # as the store keeps it: the header without "wire" (derived from the fragments' FPort)
    for d in state:
        d.pop("wire")
    r2 = Reassembler()
    r2.load(state, r.next_seq)
    (m,) = r2.open_messages()
    assert (m.wire, m.count, m.size, m.pad) == (2, 14, 51, frags[0][3])
    assert r2.feed(up(frags[0]), 1.0).status == "duplicate"
    _, closed = feed(r2, frags[11:16])
    assert len(closed) == 1 and assemble(closed[0]).complete


def test_recently_closed_v2_messages_survive_a_restart_for_late_fragments():
    frags = message(parity=3)
    r = Reassembler()
    _, (m,) = feed(r, frags[:14])
    r2 = Reassembler()
    r2.load([json.loads(json.dumps(m.to_dict()))], r.next_seq)
    assert r2.feed(up(frags[15]), 1.0).status == "duplicate"  # parity the rebuild did not need
    ev = r2.feed(up(wire2.poll(3, 14, 17)), 1.0).poll
    assert ev.closed and ev.rebuilt


def _rebuilt_then_ack_lost(r: Reassembler) -> tuple[list[bytes], float]:
    """Message 0 rebuilt with a parity row at t = 7600 while its device had moved on to
    message 1; the device did not get the ACK, so it still holds message 0 (its NEED
    rows and polls keep coming). Returns the message's fragments (rows up to index
    33) and when it closed."""
    frags = message(msg_id=0, parity=20)
    other = bytearray(DATA)
    other[8] ^= 1
    nxt = wire2.encode_message(bytes(other), 1, 51, 0)
    for i, p in enumerate(frags[:13]):  # data chunk 13 lost
        r.feed(up(p, i), 280.0 * i)
    r.feed(up(nxt[0], 20), 7300.0)
    (closed,) = r.feed(up(frags[14], 21), 7600.0).closed  # parity row 0: rebuilt
    assert closed.close_reason == "complete"
    return frags, 7600.0


def test_late_rows_of_a_rebuilt_message_still_held_by_its_device_are_duplicates():
    """The v2 sweep's duplicate delivery (EU868 DR0, 20 % loss): the device never got
    the ACK of a rebuilt message and polled for it more than the duplicate window
    later; the message forgotten, the poll was answered NEED, the rows it brought
    opened a new message with the same msg_id, and that one reached k too: the record
    delivered twice. While the device may still send for the message, the poll is
    answered ACK and the rows are its duplicates."""
    r = Reassembler()
    frags, closed_at = _rebuilt_then_ack_lost(r)
    late = closed_at + 5000.0  # past the 1 h duplicate window, within repair_hold
    assert r.expire(late) == []  # the service's deadline pass: the rebuilt message stays remembered
    ev = r.feed(up(wire2.poll(0, 14, 15), 29), late).poll
    assert ev.closed and ev.rebuilt  # answered ACK, not NEED
    results = [r.feed(up(p, 30 + i), late + 280.0 * (i + 1)) for i, p in enumerate(frags[16:34])]
    assert [res.status for res in results] == ["duplicate"] * 18
    assert [m for res in results for m in res.closed] == [] and not r.is_open(DEV, 0)
    ev = r.feed(up(wire2.poll(0, 14, 34), 60), late + 6000.0).poll
    assert ev.closed and ev.rebuilt  # answered ACK, not NEED


@pytest.mark.parametrize("moved_on", [False, True])
def test_a_rebuilt_v2_message_is_forgotten_once_its_device_cannot_send_for_it(moved_on):
    """Bounded as the hold is: after repair_hold, or once repair_keep newer msg_ids of
    the device were seen, a fragment with its msg_id starts a new message (v1's rule)."""
    r = Reassembler(Settings(repair_hold=10_000.0))
    frags, closed_at = _rebuilt_then_ack_lost(r)
    if moved_on:
        for n in range(2, 5):
            r.feed(up(message(msg_id=n, parity=0)[0], 40 + n), closed_at + 100.0 * n)
        now = closed_at + 5000.0
    else:
        now = closed_at + 10_001.0
    r.expire(now)
    assert 0 not in [x.msg_id for x in r.recent_messages()]
    assert r.feed(up(frags[16], 50), now).status == "accepted" and r.is_open(DEV, 0)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.sampled_from(message(parity=3)), st.binary(min_size=4, max_size=60)), max_size=30))
def test_any_mix_of_valid_and_random_uplinks_keeps_the_state_consistent(payloads):
    r = Reassembler(Settings(deadline_policy="fixed", message_timeout=60))
    closed = []
    for i, p in enumerate(payloads):
        try:
            res = r.feed(up(p, i), float(i))
        except FragmentError:
            continue
        closed += res.closed
    closed += r.expire(1e9)
    for m in closed:
        out = assemble(m)  # a document or an incident, never an exception
        assert out.kind in ("document", "incident")
        if out.kind == "document" and out.complete:
            assert wire.encode_record(out.record) == DATA
    assert r.open_messages() == []
