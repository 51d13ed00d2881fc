"""The one record generator: fixed sizes, deterministic for its seed."""

from __future__ import annotations

from collector.core import wire
from collector.testing.examples import example_record, seeded_record


def test_the_spec_example_is_658_bytes():
    assert len(wire.encode_record(example_record())) == 658


def test_a_seeded_record_is_reproducible_and_has_the_documented_size():
    a = wire.encode_record(seeded_record(5, 9, seed=1))
    assert len(a) == 658
    assert wire.encode_record(seeded_record(5, 9, seed=1)) == a
    assert wire.encode_record(seeded_record(5, 9, seed=2)) != a
    assert wire.encode_record(seeded_record(5, 10, seed=1)) != a
    rec = wire.decode_record(a)
    assert (rec.device_serial, rec.record_seq, rec.start_time) == (5, 9, 1_795_000_000 + 9 * 144 * 600)
    assert len(wire.encode_record(seeded_record(1, 1, samples=20))) == 162
