"""The reassembler and the document under adversarial v2 sequences (spec section 5):
each closes into exactly the document or incident the spec says."""

from __future__ import annotations

import random

import pytest

from collector.core import wire, wire2
from collector.core.assemble import assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.testing.examples import example_record

DEV = "70B3D57ED0BAD001"


def record(samples: int = 40, seq: int = 1) -> bytes:
    """A valid record with ``samples`` samples in all (at most 255 per channel)."""
    c = -(-samples // 255)
    chans = [wire.Channel(j, 0, [(seq * 7 + i * 13 + j) % 3000 for i in range(samples // c)]) for j in range(c)]
    return wire.encode_record(wire.Record(
        device_serial=0xBAD, record_seq=seq, start_time=1_700_000_000, interval_s=60, channels=chans, flags=0,
        fw_major=2, fw_minor=1, battery_mv=3300, temp_centi=2150, location=None, diagnostics=None, config=None,
        site=None))


def up(p: bytes, fport: int = 17, dev: str = DEV) -> Uplink:
    return Uplink(dev, fport, p, 1_795_500_000_000, data_rate="SF9BW125", region="EU868")


def run(payloads, r: Reassembler | None = None, fport: int = 17, now: float = 0.0):
    r = r or Reassembler(Settings(deadline_policy="fixed", message_timeout=100))
    closed, statuses = [], []
    for p in payloads:
        res = r.feed(up(p, fport), now)
        statuses.append(res.status)
        closed += res.closed
    return r, closed, statuses


def check_document(m, data: bytes, held: int) -> None:
    out = assemble(m)
    assert out.kind == "document", (out.code, out.detail)
    assert wire.encode_record(out.record) == data
    assert out.complete and out.missing_fragments == []
    k = m.count
    assert out.fragments_expected == k and len(out.held) == held
    assert f'fragmentsExpected="{k}"'.encode() in out.xml and f'fragmentsReceived="{held}"'.encode() in out.xml
    assert b"missingFragments" not in out.xml and b'complete="true"' in out.xml


@pytest.mark.parametrize("size,samples", [(5, 113), (6, 40), (242, 1), (242, 1000), (51, 300), (13, 200)],
                         ids=["k254-S5", "S6", "k1-S242", "S242", "S51", "S13"])
def test_shapes_rebuilt_from_mostly_parity(size, samples):
    data = record(samples)
    k, length, pad = wire2.geometry(len(data), size)
    parity = min(6, 255 - k)
    frames = wire2.encode_message(data, 9, size, parity)
    rng = random.Random(size * 1000 + samples)
    # every parity row, then data chunks in random order, with duplicates of both kinds
    drop = set(rng.sample(range(k), min(k, parity)))
    order = frames[k:] + [frames[i] for i in rng.sample(range(k), k) if i not in drop]
    order = [x for p in order for x in ([p, p] if rng.random() < 0.3 else [p])]
    r, closed, statuses = run(order)
    assert len(closed) == 1 and closed[0].close_reason == "complete"
    check_document(closed[0], data, k)
    # everything after the rebuild, the dropped data chunks too: duplicates, no new message
    r, closed2, statuses = run(frames + frames, r)
    assert closed2 == [] and set(statuses) == {"duplicate"} and r.open_messages() == []
    assert k == wire2.geometry(len(data), size)[0] and 0 <= pad < length


def test_pad_edges():
    """pad 0 (record a multiple of L) and pad L-1 (one byte in the last chunk)."""
    for size in (12, 51):
        length = size - 4
        for samples in range(1, 80):
            data = record(samples)
            _, _, pad = wire2.geometry(len(data), size)
            if pad in (0, length - 1):
                frames = wire2.encode_message(data, 1, size, 1)
                assert len(frames[wire2.geometry(len(data), size)[0] - 1]) == size - pad
                _, closed, _ = run(frames[1:])  # data chunk 0 from parity
                check_document(closed[0], data, len(frames) - 1)


def test_fragment_after_rebuild_with_other_bytes_is_a_new_message_not_a_change():
    data, other = record(40, seq=1), record(40, seq=2)
    a = wire2.encode_message(data, 7, 12, 2)
    b = wire2.encode_message(other, 7, 12, 2)
    k = a[0][2]
    r, closed, _ = run(a[2:])  # rebuilt from k data+parity without chunks 0, 1
    assert len(closed) == 1
    # a late chunk 0 of the same record: a duplicate; the next record under the same
    # msg_id: a new message (its fragments that are byte-equal to the old one's are
    # duplicates, as in v1; its parity makes up for them)
    _, again, st = run([a[0]], r)
    assert st == ["duplicate"] and again == []
    _, again, st = run(b, r)
    assert "accepted" in st and len(again) == 1
    check_document(closed[0], data, k)
    check_document(again[0], other, k)


def test_msg_id_wraps_and_interleaves():
    rs = [record(30, seq=s) for s in range(4)]
    msgs = [wire2.encode_message(d, mid, 24, 1) for d, mid in zip(rs, (254, 255, 0, 1), strict=True)]
    order = [p for group in zip(*msgs, strict=False) for p in group]
    _, closed, _ = run(order)
    assert sorted(m.msg_id for m in closed) == [0, 1, 254, 255]
    for m in closed:
        data = rs[(254, 255, 0, 1).index(m.msg_id)]
        check_document(m, data, m.count)


@pytest.mark.parametrize("which", ["k", "pad", "S"])
def test_contradicting_header_is_a_conflict_and_the_old_message_is_what_its_data_chunks_hold(which):
    data = wire.encode_record(example_record())  # 658 bytes, optional blocks last: k = 14 at S = 51
    frames = wire2.encode_message(data, 3, 51, 2)
    k = frames[0][2]
    if which == "k":
        bad = bytes((3, 0, k + 1, frames[0][3])) + frames[0][4:]
    elif which == "pad":
        bad = bytes((3, 0, k, (frames[0][3] + 1) % 47)) + frames[0][4:]
    else:
        bad = frames[0][:-1]
    r, closed, _ = run(frames[: k - 1] + [bad])
    assert [m.close_reason for m in closed] == ["conflict"]
    out = assemble(closed[0])
    assert out.fragments_expected == k and len(out.held) == k - 1
    assert out.missing_fragments == [k - 1] and not out.complete
    assert b'missingFragments="%d"' % (k - 1) in out.xml
    (new,) = r.open_messages()
    assert list(new.fragments) == [0]


def test_polls_for_unknown_closed_rebuilt_and_absurd():
    data = record(40)
    frames = wire2.encode_message(data, 5, 12, 2)
    k = frames[0][2]
    r = Reassembler(Settings(deadline_policy="fixed", message_timeout=100))
    ev = r.feed(up(wire2.poll(5, k, 255)), 0.0).poll  # never heard of: NEED k
    assert (ev.held, ev.need, ev.closed) == (0, k, False) and r.open_messages() == []
    run(frames[: k - 2], r)
    ev = r.feed(up(wire2.poll(5, k, 255)), 0.0).poll  # absurd sent: what is held still decides
    assert (ev.held, ev.need, ev.lost) == (k - 2, 2, 255 - (k - 2))
    ev = r.feed(up(wire2.poll(5, k, 0)), 0.0).poll  # sent below held: no negative loss
    assert ev.lost == 0 and ev.need == 2
    _, closed, _ = run(frames[k:], r)
    check_document(closed[0], data, k)
    ev = r.feed(up(wire2.poll(5, k, 9)), 1.0).poll
    assert ev.rebuilt and ev.closed and ev.need == 0
    # a message closed short at its deadline: ACK (closed), not rebuilt
    run(wire2.encode_message(record(41), 6, 12, 0)[:2], r, now=2.0)
    assert [m.msg_id for m in r.expire(500.0)] == [6]
    ev = r.feed(up(wire2.poll(6, k, 9)), 501.0).poll
    assert ev.closed and not ev.rebuilt and ev.need == 0


def test_a_device_switching_s_between_messages():
    d1, d2, d3 = record(40, seq=1), record(40, seq=2), record(40, seq=3)
    m1 = wire2.encode_message(d1, 1, 51, 0)
    m2 = wire2.encode_message(d2, 2, 12, 1)
    m3 = wire2.encode_message(d3, 3, 242, 1)
    _, closed, _ = run(m1 + m2[1:] + m3[1:])
    assert [m.msg_id for m in closed] == [1, 2, 3]
    for m, d in zip(closed, (d1, d2, d3), strict=True):
        check_document(m, d, m.count)


def test_v1_and_v2_with_the_same_msg_id_on_one_device_are_two_messages():
    """FPort says which wire format a fragment is: a v2 message does not contradict a
    v1 message that happens to carry the same msg_id, and neither is lost."""
    data1, data2 = record(300, seq=1), record(300, seq=2)
    v1 = wire.fragment(5, data1, 51)
    v2 = wire2.encode_message(data2, 5, 51, 1)
    r = Reassembler(Settings(deadline_policy="fixed", message_timeout=100))
    closed = []
    for p in v1[:7]:
        closed += r.feed(up(p, 16), 0.0).closed
    for p in v2[1:]:
        closed += r.feed(up(p), 0.0).closed
    for p in v1[7:]:
        closed += r.feed(up(p, 16), 0.0).closed
    assert sorted((m.wire, m.close_reason) for m in closed) == [(1, "complete"), (2, "complete")]
    by_wire = {m.wire: assemble(m) for m in closed}
    assert wire.encode_record(by_wire[1].record) == data1 and wire.encode_record(by_wire[2].record) == data2
    # and a poll for msg_id 5 speaks of the v2 message
    ev = r.feed(up(wire2.poll(5, v2[0][2], len(v2))), 1.0).poll
    assert ev.rebuilt
