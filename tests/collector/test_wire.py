"""Wire format v1: fragments and the record codec (wire-format.md §1-2)."""

from __future__ import annotations

import binascii

import construct
import pytest
from hypothesis import given
from hypothesis import strategies as st

from collector.core import wire
from collector.testing.examples import example_record

from .conftest import records, sizes_for


def test_crc_is_ccitt_false():
    # the standard check value of CRC-16/CCITT-FALSE
    assert wire.crc16(b"123456789") == 0x29B1
    assert binascii.crc_hqx(b"", 0xFFFF) == 0xFFFF


@pytest.mark.parametrize("size,count", [(11, 74), (51, 14), (115, 6), (222, 3), (242, 3)])
def test_worked_sizes_of_the_658_byte_record(size, count):
    data = wire.encode_record(example_record())
    assert len(data) == 658
    assert wire.fragment_count(658, size) == count
    assert len(wire.fragment(0, data, size)) == count


def test_fragment_layout_byte_by_byte():
    data = bytes(range(20))
    frags = wire.fragment(7, data, 8)  # 5 bytes in fragment 0, then 6 each
    assert frags[0] == bytes([7, 0, 4]) + data[:5]
    assert frags[1] == bytes([7, 1]) + data[5:11]
    assert frags[2] == bytes([7, 2]) + data[11:17]
    assert frags[3] == bytes([7, 3]) + data[17:]
    assert wire.chunk_offset(2, 8) == 11
    assert wire.fragment_lengths(20, 8) == [8, 8, 8, 5]


@given(st.binary(min_size=1, max_size=600), st.data())
def test_fragment_and_defragment_are_inverse_for_every_size(data, d):
    size = d.draw(sizes_for(len(data)))
    msg_id = d.draw(st.integers(0, 255))
    frags = wire.fragment(msg_id, data, size)
    assert len(frags) == wire.fragment_count(len(data), size)
    assert all(len(f) == size for f in frags[:-1]) and len(frags[-1]) <= size
    shuffled = d.draw(st.permutations(frags + d.draw(st.lists(st.sampled_from(frags), max_size=5))))
    assert wire.defragment(shuffled) == (msg_id, data)


def test_record_too_long_for_255_fragments_is_refused():
    with pytest.raises(ValueError, match="at most 255"):
        wire.fragment(0, bytes(2400), 11)


@pytest.mark.parametrize(
    "payload,code",
    [
        (b"", "fragment_short"),
        (b"\x01", "fragment_short"),
        (b"\x01\x00", "fragment_short"),
        (b"\x01\x00\x00\x01", "fragment_count_zero"),
        (b"\x01\x00\x03", "fragment_empty"),
        (b"\x01\x05", "fragment_empty"),
        (bytes(243), "fragment_long"),
    ],
)
def test_bad_fragment_headers_name_the_problem(payload, code):
    with pytest.raises(wire.FragmentError) as e:
        wire.parse_fragment(payload)
    assert e.value.code == code and e.value.detail


@given(records())
def test_fast_path_matches_the_construct_declaration(rec):
    data = wire.encode_record(rec)
    assert len(data) == rec.encoded_len()
    ref = wire.RECORD_V1.parse(data)
    req = ref.required.value
    fast = wire.decode_record(data)
    assert fast == rec
    for name in ("schema_version", "flags", "device_serial", "fw_major", "fw_minor", "record_seq",
                 "start_time", "interval_s", "battery_mv", "temp_centi"):
        assert getattr(fast, name) == req[name], name
    assert req.channel_count == len(fast.channels) and req.sample_count == fast.sample_count
    assert req.meta_mask == rec.meta_mask
    assert [(c.unit, c.exponent) for c in req.channels] == [(c.unit, c.exponent) for c in fast.channels]
    assert list(req.samples) == [s for c in fast.channels for s in c.samples]
    for block in ("location", "diagnostics", "config"):
        ours, theirs = getattr(fast, block), ref[block]
        if ours is None:
            assert theirs is None
        else:
            assert {k: v for k, v in theirs.items() if not k.startswith("_")} == vars(ours)
    assert (ref.site.label if ref.site else None) == (fast.site.label if fast.site else None)
    # and the reference declaration builds the same bytes
    built = wire.RECORD_V1.build(dict(
        required=dict(value=dict(req)), crc16=None, location=ref.location, diagnostics=ref.diagnostics,
        config=ref.config, site=ref.site,
    ))
    assert built == data


def _corrupt(data: bytes, offset: int, value: int, fix_crc: bool = True) -> bytes:
    b = bytearray(data)
    b[offset] = value
    if fix_crc:
        c, k = b[16], b[17]
        end = wire.required_length(c, k) - 2
        b[end : end + 2] = wire.crc16(bytes(b[:end])).to_bytes(2, "big")
    return bytes(b)


@pytest.mark.parametrize(
    "offset,value,code",
    [
        (0, 2, "schema_version"),
        (22, 0x1F, "meta_mask_reserved"),
        (16, 0, "channel_count"),
        (16, 5, "channel_count"),
        (17, 0, "sample_count"),
        (14, 0, "interval_s"),
        (25, 7, "exponent"),
    ],
)
def test_invalid_records_raise_a_specific_error(offset, value, code):
    data = wire.encode_record(example_record(samples=4, blocks=False))
    if offset == 14:
        data = _corrupt(_corrupt(data, 14, 0), 15, 0)
    else:
        data = _corrupt(data, offset, value)
    with pytest.raises(wire.RecordError) as e:
        wire.decode_record(data)
    assert e.value.code == code, e.value.detail


def test_crc_mismatch_is_reported_with_both_values():
    data = bytearray(wire.encode_record(example_record(samples=4, blocks=False)))
    data[30] ^= 0xFF
    with pytest.raises(wire.RecordError, match="CRC mismatch") as e:
        wire.decode_record(bytes(data))
    assert e.value.code == "crc"


def test_truncated_record_names_the_missing_bytes():
    data = wire.encode_record(example_record(samples=4, blocks=False))
    with pytest.raises(wire.RequiredMissing, match="missing"):
        wire.decode_record(data[:20])
    with pytest.raises(wire.RecordError) as e:
        wire.decode_record(data + b"\0")
    assert e.value.code == "length"


def test_reference_declaration_rejects_a_bad_crc():
    data = bytearray(wire.encode_record(example_record(samples=4, blocks=False)))
    data[-1] ^= 1
    with pytest.raises(construct.ChecksumError):
        wire.RECORD_V1.parse(bytes(data))


def test_record_json_form_round_trips():
    rec = example_record()
    assert wire.record_from_dict(wire.record_to_dict(rec)) == rec
    with pytest.raises(ValueError, match="'interval_s' is missing"):
        wire.record_from_dict({k: v for k, v in wire.record_to_dict(rec).items() if k != "interval_s"})
    with pytest.raises(ValueError, match="unknown record field"):
        wire.record_from_dict({**wire.record_to_dict(rec), "colour": 1})
