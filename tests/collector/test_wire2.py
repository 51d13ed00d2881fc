"""Wire format v2 framing, polls and downlink commands (wire-format-v2.md §2, §3, §5, §6)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.core import wire2
from collector.core.wire import FragmentError, encode_record
from collector.testing.examples import example_record

RECORD = bytes(range(1, 31))
WORKED = [bytes.fromhex(h) for h in (
    "07000402 0102030405060708",
    "07010402 090a0b0c0d0e0f10",
    "07020402 1112131415161718",
    "07030402 191a1b1c1d1e",
    "07040402 e3e6e5eceFeaf5e8",
    "07050402 fbfefdf4f7f2d6c0",
)]


def test_worked_example_uplinks_byte_for_byte():
    assert wire2.encode_message(RECORD, 7, 12, 2) == WORKED
    assert wire2.parity_fragment(RECORD, 7, 12, 1) == WORKED[5]
    assert wire2.poll(7, 4, 6) == bytes.fromhex("07ff0406")
    assert wire2.encode_downlink([wire2.Need(7, 1)]) == bytes.fromhex("020701")
    assert wire2.geometry(30, 12) == (4, 8, 2)


def test_parse_worked_example():
    frags = [wire2.parse_v2(p) for p in WORKED]
    assert [f.index for f in frags] == list(range(6))
    assert {(f.msg_id, f.k, f.pad, f.size) for f in frags} == {(7, 4, 2, 12)}
    assert frags[3].chunk == bytes(range(0x19, 0x1F))  # without its pad
    assert frags[4].is_parity and not frags[3].is_parity
    assert frags[0].record_len == 30
    # the fast constructor parse_v2 uses makes the same (frozen, hashable) value
    assert frags[0] == wire2.V2Fragment(7, 0, 4, 2, 12, bytes(range(1, 9)))
    assert hash(frags[0]) == hash(wire2.V2Fragment(7, 0, 4, 2, 12, bytes(range(1, 9))))
    with pytest.raises(AttributeError):
        frags[0].k = 5
    assert wire2.parse_v2(bytes.fromhex("07ff0406")) == wire2.V2Poll(7, 4, 6)


def test_any_four_of_six_decode_in_any_order_with_duplicates():
    for chosen in itertools.combinations(WORKED, 4):
        frags = [wire2.parse_v2(p) for p in reversed(chosen + chosen[:1])]
        assert wire2.rebuild_record(frags) == RECORD


@pytest.mark.parametrize("payload,code,match", [
    ("07000002 0102", "v2_k", "k is 0"),
    ("0700ff02 0102", "v2_k", "k is 255"),
    ("07ff0000", "v2_k", "k is 0"),
    ("0700", "v2_short", "2 byte"),
    ("07000400", "v2_short", "4 bytes; at least 5"),
    ("07ff040600", "v2_poll_length", "exactly 4 bytes, not 5"),
    ("07000408 0102030405060708", "v2_pad", "pad 8 is not below the chunk length 8"),
    ("0700040a 0102030405060708", "v2_pad", "pad 10"),
    ("070404ff e3e6e5eceFeaf5e8", "v2_pad", "pad 255"),
    ("070001f0 " + "00" * 20, "v2_pad", "fragment size of 264"),
    ("07000402" + "00" * 239, "v2_long", "243 bytes"),
])
def test_bad_inputs_of_section_5(payload, code, match):
    with pytest.raises(FragmentError, match=match) as e:
        wire2.parse_v2(bytes.fromhex(payload))
    assert e.value.code == code


def test_mismatched_headers_refused():
    other_pad = bytes.fromhex("07040403 e3e6e5eceFeaf5e8")
    other_k = bytes.fromhex("07050502 fbfefdf4f7f2d6c0")
    other_size = bytes.fromhex("07050402 fbfefdf4f7f2d6c0aa")
    for bad, what in ((other_pad, "pad 3 contradicts pad 2"), (other_k, "k 5 contradicts k 4"),
                      (other_size, "size 13 contradicts size 12")):
        with pytest.raises(FragmentError, match=what) as e:
            wire2.rebuild_record([wire2.parse_v2(p) for p in (*WORKED[:3], bad)])
        assert e.value.code == "v2_conflict"
    changed = bytearray(WORKED[1])
    changed[-1] ^= 1
    with pytest.raises(FragmentError, match="two different fragments with index 1"):
        wire2.rebuild_record([wire2.parse_v2(p) for p in (*WORKED, bytes(changed))])
    with pytest.raises(FragmentError, match="3 distinct fragment"):
        wire2.rebuild_record([wire2.parse_v2(p) for p in WORKED[:3]])
    with pytest.raises(FragmentError, match="messages 7 and 8"):
        wire2.rebuild_record([wire2.parse_v2(p) for p in (WORKED[0], b"\x08" + WORKED[1][1:])])


def test_encode_refuses_what_v2_cannot_send():
    with pytest.raises(ValueError, match="at most 254"):
        wire2.encode_message(bytes(255), 0, 5, 0)  # L = 1: 255 chunks
    with pytest.raises(ValueError, match="outside 5..242"):
        wire2.encode_message(RECORD, 0, 4, 0)
    with pytest.raises(ValueError, match="k \\+ rows"):
        wire2.encode_message(bytes(250), 0, 5, 6)
    with pytest.raises(ValueError, match="msg_id 256"):
        wire2.encode_message(RECORD, 256, 12, 0)
    with pytest.raises(ValueError, match="empty record"):
        wire2.encode_message(b"", 0, 12, 0)


@settings(max_examples=30, deadline=None)
@given(st.binary(min_size=1, max_size=700), st.integers(5, 242), st.integers(0, 4), st.randoms())
def test_encode_parse_rebuild_roundtrip(record, size, parity, rnd):
    k = wire2.geometry(len(record), size)[0]
    if k > 254 - parity + 1:
        return
    payloads = wire2.encode_message(record, 200, size, parity)
    assert all(len(p) == size for i, p in enumerate(payloads) if i != k - 1)
    frags = [wire2.parse_v2(p) for p in payloads]
    assert {(f.k, f.size) for f in frags} == {(k, size)}
    chosen = rnd.sample(frags, k)
    assert wire2.rebuild_record(chosen) == record


def test_658_byte_record_at_51():
    data = encode_record(example_record())
    payloads = wire2.encode_message(data, 1, 51, 2)
    assert len(payloads) == 14 + 2  # k = ceil(658 / 47) = 14
    assert wire2.rebuild_record(wire2.parse_v2(p) for p in payloads[2:]) == data


def test_downlink_commands_roundtrip():
    cmds = [wire2.Ack(3), wire2.Need(4, 2), wire2.Redundancy(5), wire2.Ack(255)]
    payload = wire2.encode_downlink(cmds)
    assert payload == bytes.fromhex("0103 020402 0305 01ff")
    assert wire2.decode_downlink(payload) == cmds
    assert wire2.encode_downlink([]) == b""


def test_downlink_decoding_stops_at_unknown_or_cut_commands():
    assert wire2.decode_downlink(bytes.fromhex("0103 09 0104")) == [wire2.Ack(3)]
    assert wire2.decode_downlink(bytes.fromhex("0103 0204")) == [wire2.Ack(3)]
    assert wire2.decode_downlink(bytes.fromhex("01")) == []
    # an argument out of range is skipped, not the rest
    assert wire2.decode_downlink(bytes.fromhex("020400 0321 0105")) == [wire2.Ack(5)]


@pytest.mark.parametrize("cmd", [wire2.Need(1, 0), wire2.Need(1, 256), wire2.Redundancy(33), wire2.Ack(-1)])
def test_encode_downlink_refuses_arguments_out_of_range(cmd):
    with pytest.raises(ValueError):
        wire2.encode_downlink([cmd])


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=260))
def test_any_bytes_parse_or_raise_a_fragment_error(payload):
    try:
        f = wire2.parse_v2(payload)
    except FragmentError as e:
        assert e.code.startswith("v2_") and e.detail
        return
    if isinstance(f, wire2.V2Poll):
        assert wire2.poll(f.msg_id, f.k, f.sent) == payload
    else:
        assert bytes((f.msg_id, f.index, f.k, f.pad)) + f.chunk == payload
        assert 5 <= f.size <= 242 and f.pad < f.chunk_len
