"""The erasure code of wire format v2 (wire-format-v2.md §1 and the worked example §6)."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from collector.core import fec

RECORD = bytes(range(1, 31))  # §6: 01 02 .. 1E
CHUNKS = [RECORD[i : i + 8] for i in range(0, 30, 8)]  # L = 8, the last chunk without its 2 pad bytes


def test_field_tables():
    # 2 generates the multiplicative group of GF(2^8)/0x11D
    x, seen = 1, set()
    for _ in range(255):
        seen.add(x)
        x = fec.gf_mul(x, 2)
    assert len(seen) == 255 and x == 1
    assert fec.gf_mul(0x80, 2) == 0x1D  # x^8 reduced by the polynomial
    for a in range(1, 256):
        assert fec.gf_mul(a, fec.gf_inv(a)) == 1
    with pytest.raises(ZeroDivisionError):
        fec.gf_inv(0)


def test_worked_example_coefficients():
    assert [fec.coefficient(0, i) for i in range(4)] == [0xFD, 0x7E, 0xFF, 0x7F]
    assert [fec.coefficient(1, i) for i in range(4)] == [0x7E, 0xFD, 0x7F, 0xFF]


def test_worked_example_parity_rows():
    rows = fec.parity_rows(CHUNKS, 0, 2)
    assert rows == [bytes.fromhex("e3e6e5eceFeaf5e8"), bytes.fromhex("fbfefdf4f7f2d6c0")]
    # a row does not depend on how many are asked for
    assert fec.parity_rows(CHUNKS, 1, 1) == rows[1:]


def test_worked_example_any_four_of_six_rebuild():
    rows = fec.parity_rows(CHUNKS, 0, 2)
    frags = dict(enumerate(CHUNKS)) | {4: rows[0], 5: rows[1]}
    for chosen in itertools.combinations(range(6), 4):
        out = fec.rebuild(4, {i: frags[i] for i in chosen})
        assert all(len(c) == 8 for c in out)
        assert b"".join(out) == RECORD + b"\0\0", chosen


def test_three_of_six_is_not_enough():
    rows = fec.parity_rows(CHUNKS, 0, 2)
    with pytest.raises(fec.FecError, match="3 distinct fragment"):
        fec.rebuild(4, {0: CHUNKS[0], 4: rows[0], 5: rows[1]})


@pytest.mark.parametrize("k,held,match", [
    (0, {}, "k is 0"),
    (255, {}, "k is 255"),
    (2, {0: b"ab", 255: b"cd"}, "outside"),
    (2, {0: b"abc", 2: b"cd"}, "chunk 2 is 2 bytes"),
])
def test_rebuild_refuses_inconsistent_input(k, held, match):
    with pytest.raises(fec.FecError, match=match):
        fec.rebuild(k, held)


def test_parity_rows_bounds():
    with pytest.raises(fec.FecError, match="k \\+ row"):
        fec.parity_rows([b"x"] * 250, 0, 6)  # row 5 of a 250-chunk message has index 255
    assert len(fec.parity_rows([b"x"] * 250, 0, 5)) == 5
    with pytest.raises(fec.FecError, match="one non-zero length"):
        fec.parity_rows([b"ab", b"abc"], 0, 1)
    with pytest.raises(fec.FecError, match="1..254"):
        fec.parity_rows([], 0, 1)


@st.composite
def erasure_cases(draw):
    k = draw(st.integers(1, 254))
    r = draw(st.integers(0, min(8, 254 - k + 1)))
    size = draw(st.integers(5, 242))
    length = size - 4
    last = draw(st.integers(1, length))
    seed = draw(st.binary(min_size=1, max_size=64))
    data = (seed * (k * length // len(seed) + 1))[: (k - 1) * length + last]
    data = bytes((b + i * 7) & 0xFF for i, b in enumerate(data))  # not periodic
    n = k + r
    chosen = draw(st.lists(st.integers(0, n - 1), min_size=k, max_size=k, unique=True))
    return k, r, length, data, chosen


@settings(max_examples=40, deadline=None)
@given(erasure_cases())
def test_any_k_of_k_plus_r_rebuild(case):
    k, r, length, data, chosen = case
    chunks = [data[i : i + length] for i in range(0, len(data), length)]
    assert len(chunks) == k
    rows = fec.parity_rows(chunks, 0, r)
    frags = dict(enumerate(chunks)) | {k + j: row for j, row in enumerate(rows)}
    out = fec.rebuild(k, {i: frags[i] for i in chosen})
    assert b"".join(out)[: len(data)] == data


@settings(max_examples=10, deadline=None)
@given(st.integers(1, 64), st.integers(5, 242), st.data())
def test_rebuild_from_parity_only(k, size, data):
    # the hardest case: every data chunk lost, k parity rows held (any of them)
    length = size - 4
    record = data.draw(st.binary(min_size=k * length, max_size=k * length))
    chunks = [record[i : i + length] for i in range(0, len(record), length)]
    first = data.draw(st.integers(0, 254 - k - k + 1)) if 254 - 2 * k + 1 >= 0 else 0
    rows = fec.parity_rows(chunks, first, min(k, 255 - k - first))
    if len(rows) < k:
        return
    held = {k + first + j: row for j, row in enumerate(rows)}
    assert b"".join(fec.rebuild(k, held)) == record


def test_largest_message_loses_half():
    # k = 127 data chunks of the longest size, every second one lost, made up by parity
    length = 238
    record = bytes((i * 31 + 7) & 0xFF for i in range(127 * length))
    chunks = [record[i : i + length] for i in range(0, len(record), length)]
    rows = fec.parity_rows(chunks, 0, 127)
    held = {i: c for i, c in enumerate(chunks) if i % 2} | {127 + j: row for j, row in enumerate(rows[:64])}
    assert b"".join(fec.rebuild(127, held)) == record
