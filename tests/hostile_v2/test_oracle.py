"""Wire format v2's code (spec section 1 and 6) against an independent oracle.

The oracle below is written from the spec alone, slow and obvious: GF(2^8) by
shift-and-add multiplication modulo 0x11D, inverses by brute force, parity rows by
the definition, and rebuilding by Gauss-Jordan elimination on the k x k generator
rows of the fragments held. It shares no code with ``collector.core.fec``.
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collector.core import fec, wire2
from collector.core.wire import FragmentError

# --------------------------------------------------------------------------- the oracle


def o_mul(a: int, b: int) -> int:
    out = 0
    while b:
        if b & 1:
            out ^= a
        a <<= 1
        if a & 0x100:
            a ^= 0x11D
        b >>= 1
    return out


O_INV = [0] + [next(x for x in range(1, 256) if o_mul(a, x) == 1) for a in range(1, 256)]


def o_coef(j: int, i: int) -> int:
    return O_INV[(255 - j) ^ i]


def o_generator_row(k: int, index: int) -> list[int]:
    """The coefficients of fragment ``index`` over the k data chunks."""
    if index < k:
        return [int(i == index) for i in range(k)]
    return [o_coef(index - k, i) for i in range(k)]


def o_encode(record: bytes, size: int, parity: int, msg_id: int) -> list[bytes]:
    length = size - 4
    k = max(1, -(-len(record) // length))
    pad = k * length - len(record)
    padded = record + bytes(pad)
    data = [padded[i * length:(i + 1) * length] for i in range(k)]
    out = []
    for index in range(k + parity):
        row = o_generator_row(k, index)
        chunk = bytes(_dot(row, data, b) for b in range(length))
        if index == k - 1 and pad:
            chunk = chunk[:-pad]
        out.append(bytes((msg_id, index, k, pad)) + chunk)
    return out


def _dot(row: list[int], chunks: list[bytes], b: int) -> int:
    acc = 0
    for c, chunk in zip(row, chunks, strict=True):
        acc ^= o_mul(c, chunk[b])
    return acc


def o_decode(k: int, held: dict[int, bytes]) -> list[bytes]:
    """Gauss-Jordan on the generator rows of any k held fragments (chunks L bytes)."""
    picks = sorted(held)[:k]
    rows = [o_generator_row(k, i) + list(held[i]) for i in picks]
    for col in range(k):
        piv = next(r for r in range(col, k) if rows[r][col])
        rows[col], rows[piv] = rows[piv], rows[col]
        inv = O_INV[rows[col][col]]
        rows[col] = [o_mul(inv, x) for x in rows[col]]
        for r in range(k):
            if r != col and rows[r][col]:
                f = rows[r][col]
                rows[r] = [x ^ o_mul(f, y) for x, y in zip(rows[r], rows[col], strict=True)]
    return [bytes(r[k:]) for r in rows]


# --------------------------------------------------------------------------- the tests


def test_oracle_field_facts():
    """The oracle itself: the spec's coefficient values and 2 generating the field."""
    assert [o_coef(0, i) for i in range(4)] == [0xFD, 0x7E, 0xFF, 0x7F]
    assert [o_coef(1, i) for i in range(4)] == [0x7E, 0xFD, 0x7F, 0xFF]
    x, seen = 1, set()
    for _ in range(255):
        seen.add(x)
        x = o_mul(x, 2)
    assert len(seen) == 255


EXAMPLE = """
07 00 04 02 01 02 03 04 05 06 07 08
07 01 04 02 09 0a 0b 0c 0d 0e 0f 10
07 02 04 02 11 12 13 14 15 16 17 18
07 03 04 02 19 1a 1b 1c 1d 1e
07 04 04 02 e3 e6 e5 ec ef ea f5 e8
07 05 04 02 fb fe fd f4 f7 f2 d6 c0
"""


def test_worked_example_byte_for_byte():
    expected = [bytes.fromhex(line) for line in EXAMPLE.strip().splitlines()]
    record = bytes(range(1, 31))
    assert o_encode(record, 12, 2, 7) == expected
    assert wire2.encode_message(record, 7, 12, 2) == expected
    assert [fec.coefficient(j, i) for j in (0, 1) for i in range(4)] == [0xFD, 0x7E, 0xFF, 0x7F, 0x7E, 0xFD, 0x7F, 0xFF]
    assert wire2.poll(7, 4, 6) == bytes.fromhex("07ff0406")
    assert wire2.encode_downlink([wire2.Need(7, 1)]) == bytes.fromhex("020701")
    # any four of the six rebuild the record
    import itertools
    for four in itertools.combinations(expected, 4):
        assert wire2.rebuild_record([wire2.parse_v2(p) for p in four]) == record


@st.composite
def messages(draw):
    size = draw(st.integers(5, 242))
    length = size - 4
    k = draw(st.integers(1, 40))
    b = draw(st.integers(max(1, (k - 1) * length + 1), k * length))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = random.Random(seed)
    record = bytes(rng.randrange(256) for _ in range(b))
    parity = draw(st.integers(0, min(12, 254 - k + 1)))
    lost = draw(st.integers(0, parity))
    order = list(range(k + parity))
    rng.shuffle(order)
    return record, size, parity, set(order[:lost]), draw(st.integers(0, 255))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages())
def test_encoder_and_rebuild_match_the_oracle(msg):
    record, size, parity, lost, msg_id = msg
    ours = wire2.encode_message(record, msg_id, size, parity)
    assert ours == o_encode(record, size, parity, msg_id)
    frags = [wire2.parse_v2(p) for i, p in enumerate(ours) if i not in lost]
    k = frags[0].k
    assert all(f.size == size and f.record_len == len(record) for f in frags)
    assert wire2.rebuild_record(frags) == record
    held = {f.index: f.chunk.ljust(size - 4, b"\0") for f in frags}
    padded = record + bytes(k * (size - 4) - len(record))
    assert fec.rebuild(k, held) == o_decode(k, held) == [padded[i * (size - 4):(i + 1) * (size - 4)] for i in range(k)]
    # one fewer than k distinct is refused, not guessed
    if len(frags) > k - 1:
        few = frags[: k - 1]
        try:
            wire2.rebuild_record(few)
        except FragmentError:
            pass
        else:
            raise AssertionError("rebuilt from fewer than k fragments")


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from([(254, 5), (254, 6), (200, 242), (1, 242), (1, 5), (127, 9)]))
def test_extremes_high_parity_rows(seed, shape):
    """k=254 at S=5 (one-byte chunks), parity rows up to index 254, only parity held."""
    k, size = shape
    rng = random.Random(seed)
    length = size - 4
    record = bytes(rng.randrange(256) for _ in range(k * length - rng.randrange(length)))
    parity = 254 - k + 1
    frames = wire2.encode_message(record, 255, size, parity)
    assert len(frames) == 255 and frames[-1][1] == 254
    # the highest rows of the oracle match (row by row is slow; sample a few)
    oracle = o_encode(record, size, parity, 255) if k * length <= 400 else None
    if oracle is not None:
        assert frames == oracle
    keep = rng.sample(range(len(frames)), k) if k < 254 else sorted(rng.sample(range(len(frames)), k))
    frags = [wire2.parse_v2(frames[i]) for i in keep]
    assert wire2.rebuild_record(frags) == record
