"""The erasure code of wire format v2 (``docs/spec/wire-format-v2.md`` section 1).

A systematic code over GF(2^8) (polynomial 0x11D, generator 2): the ``k`` data chunks
are sent as they are, and parity row ``j`` is ``p_j = XOR_i c(j, i) * d_i`` with the
Cauchy coefficients ``c(j, i) = 1 / ((255 - j) XOR i)``. Every square submatrix of a
Cauchy matrix is invertible, so any ``k`` distinct chunks (data or parity) determine
the data, and row ``j`` does not depend on how many rows are sent.

Implementation: the coefficient matrices are small (at most 254 x 254) and are built
with numpy: a 256 x 256 multiplication table, the Cauchy submatrix of the rows and
chunks at hand, and, to rebuild, Gauss-Jordan elimination over GF(256) on the
e x e submatrix of the missing data chunks (one vectorised row operation per pivot),
folded with the subtraction of the data chunks held into one decoding matrix per
loss pattern (``A^-1 [I | B]``), cached, since a fleet's loss patterns repeat.
Applying a matrix to the chunks multiplies each chunk by a constant with one
``bytes.translate`` through a row of the table and XORs whole chunks as Python
integers: a few C calls per coefficient. Measured on the 14-chunk, 47-byte case
(2 erasures), this took about 20 us against 40-55 us for the numpy gather
``MUL[a[:, :, None], b[None]]`` it replaced, and 17 ms against 30 ms on a 100 x 154
matrix of 238-byte chunks.

Libraries considered (measured on Python 3.11 with numpy 2, 2-core machine):

- ``galois`` 0.4 builds GF(2^8) with this polynomial and could express the matrix,
  but it has no Cauchy erasure code (its Reed-Solomon is a different code), and it
  pulls in numba/llvmlite: ``import galois`` took 0.95 s warm (2.0 s under
  ``-X importtime`` cold) against 0.16 s for ``import numpy``, a cost every
  ``collector`` command and test process would pay.
- ``pyfinite`` 1.9 has GF(2^8) arithmetic (it agrees: 1/0xFF = 0xFD, 1/0xFE = 0x7E)
  but in pure Python, one call per byte: 41 us for the 238 multiplies of one chunk
  row, so about 0.6 ms per parity row of a 14-chunk message, where the table gather
  here does a whole matrix in tens of microseconds. Its coder is not this matrix.
- ``reedsolo`` is a Reed-Solomon error-correcting codec with its own generator
  polynomial: a different code (its parity does not match section 6's example).
- ``zfec`` uses a Vandermonde-derived systematic matrix: not this one either.

None produces exactly this code, so it is written here on top of numpy (already a
dependency); ``tests/collector/test_fec.py`` checks it against the spec's worked
example byte for byte.

Pure code: no clock, no I/O.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

#: the field polynomial x^8 + x^4 + x^3 + x^2 + 1
POLY = 0x11D
#: the most data chunks a message may have, and the highest fragment index
MAX_K = 254
MAX_INDEX = 254


class FecError(ValueError):
    """The chunks cannot be encoded or rebuilt (too few, inconsistent, out of range)."""


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    exp = np.zeros(512, dtype=np.int32)
    log = np.zeros(256, dtype=np.int32)
    x = 1
    for i in range(255):
        exp[i] = x
        log[x] = i
        x <<= 1
        if x & 0x100:
            x ^= POLY
    exp[255:510] = exp[0:255]
    a = np.arange(256)
    mul = exp[(log[a][:, None] + log[a][None, :])].astype(np.uint8)
    mul[0, :] = 0
    mul[:, 0] = 0
    inv = np.zeros(256, dtype=np.uint8)
    inv[1:] = exp[255 - log[1:]]
    return exp, log, mul, inv


_EXP, _LOG, MUL, INV = _tables()
#: row c of the multiplication table as a bytes.translate table: ``x.translate(_TABLES[c])``
#: multiplies every byte of x by c in one C call
_TABLES = [bytes(MUL[c]) for c in range(256)]


def gf_mul(a: int, b: int) -> int:
    return int(MUL[a, b])


def gf_inv(a: int) -> int:
    if a == 0:
        raise ZeroDivisionError("0 has no inverse in GF(256)")
    return int(INV[a])


def coefficient(j: int, i: int) -> int:
    """``c(j, i) = 1 / ((255 - j) XOR i)``: parity row ``j``'s factor for data chunk ``i``."""
    return int(INV[(255 - j) ^ i])


def _cauchy(rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The coefficient matrix of parity rows ``rows`` over data chunks ``cols``."""
    return INV[(255 - rows)[:, None] ^ cols[None, :]]


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` over GF(256): a is (m, n) coefficients, b is (n, L) bytes."""
    if a.shape[1] == 0:
        return np.zeros((a.shape[0], b.shape[1]), dtype=np.uint8)
    if a.shape[0] * a.shape[1] * b.shape[1] <= 1 << 22:
        return np.bitwise_xor.reduce(MUL[a[:, :, None], b[None, :, :]], axis=1)
    out = np.zeros((a.shape[0], b.shape[1]), dtype=np.uint8)  # large: one column at a time
    for i in range(a.shape[1]):
        out ^= MUL[a[:, i][:, None], b[i][None, :]]
    return out


def _solve(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``x`` with ``a @ x == b`` over GF(256), for ``a`` a square Cauchy matrix.

    No pivot search: every leading principal submatrix of a Cauchy matrix is itself a
    Cauchy matrix, hence invertible, so each pivot met in elimination order is nonzero.
    """
    n = a.shape[0]
    aug = np.concatenate([a, b], axis=1)
    for col in range(n):
        pivot = aug[col, col]
        if not pivot:  # cannot happen for a Cauchy matrix; a guard, not a code path
            raise FecError("singular coefficient matrix")
        aug[col] = MUL[INV[pivot], aug[col]]
        factors = aug[:, col].copy()
        factors[col] = 0
        aug ^= MUL[factors[:, None], aug[col][None, :]]
    return aug[:, n:]


def _apply(coefs: list[list[int]], chunks: Sequence[bytes], length: int) -> list[bytes]:
    """``coefs @ chunks`` over GF(256), as bytes: each output row is the XOR of the
    chunks multiplied by its coefficients. ``bytes.translate`` multiplies a whole chunk
    by a constant and Python's big integers XOR whole chunks, so the cost is a few
    C calls per coefficient (measured faster than a numpy gather at every size here)."""
    out = []
    tables = _TABLES
    for row in coefs:
        acc = 0
        for c, chunk in zip(row, chunks, strict=True):
            if c:
                acc ^= int.from_bytes(chunk.translate(tables[c]), "big")
        out.append(acc.to_bytes(length, "big"))
    return out


def parity_rows(chunks: Sequence[bytes], first: int, count: int) -> list[bytes]:
    """Parity rows ``first .. first+count-1`` of the data ``chunks``, all of one length
    L. The last may be shorter (it is padded with zeros, as the spec's padded record
    is), but then L is that of the first chunk: with k = 1, pass it padded."""
    k = len(chunks)
    if not 1 <= k <= MAX_K:
        raise FecError(f"{k} data chunks; a message has 1..{MAX_K}")
    if first < 0 or count < 0:
        raise FecError("parity rows are numbered from 0")
    if count and k + first + count - 1 > MAX_INDEX:
        raise FecError(f"parity row {first + count - 1} of a {k}-chunk message: k + row must be <= {MAX_INDEX}")
    length = len(chunks[0])
    if any(len(c) != length for c in chunks[:-1]) or len(chunks[-1]) > length or not length:
        raise FecError("data chunks must share one non-zero length (the last may be shorter)")
    if not count:
        return []
    if len(chunks[-1]) < length:
        chunks = [*chunks[:-1], bytes(chunks[-1]).ljust(length, b"\0")]
    c = _cauchy(np.arange(first, first + count), np.arange(k)).tolist()
    return _apply(c, chunks, length)


#: decoders for up to this many missing chunks are cached (at most 8 x 254 bytes each,
#: so the cache stays under 10 MB)
CACHED_ERASURES = 8


def _decoder(k: int, missing: tuple[int, ...], rows: tuple[int, ...], known: tuple[int, ...]) -> list[list[int]]:
    if len(missing) <= CACHED_ERASURES:
        return _cached_decoder(k, missing, rows, known)
    return _make_decoder(k, missing, rows, known)


def _make_decoder(k: int, missing: tuple[int, ...], rows: tuple[int, ...], known: tuple[int, ...]) -> list[list[int]]:
    """The matrix that gives the ``missing`` data chunks from the parity ``rows`` and
    the ``known`` data chunks (in that order): ``A^-1 [I | B]`` with ``A`` the Cauchy
    submatrix of ``rows`` x ``missing`` and ``B`` that of ``rows`` x ``known`` (minus
    is plus in GF(2^8))."""
    rows_a = np.array(rows)
    a_inv = _solve(_cauchy(rows_a, np.array(missing)), np.eye(len(missing), dtype=np.uint8))
    if not known:
        return a_inv.tolist()
    return np.concatenate([a_inv, _matmul(a_inv, _cauchy(rows_a, np.array(known)))], axis=1).tolist()


#: the loss patterns of a fleet repeat: a few thousand decoders cover them
_cached_decoder = functools.lru_cache(maxsize=4096)(_make_decoder)


def rebuild_joined(k: int, held: Mapping[int, bytes]) -> bytes:
    """:func:`rebuild`, the k chunks joined (k * L bytes)."""
    if not 1 <= k <= MAX_K:
        raise FecError(f"k is {k}; a message has 1..{MAX_K} data chunks")
    if len(held) < k:
        raise FecError(f"{len(held)} distinct fragment(s) held; {k} needed to rebuild")
    length = 0
    for i, c in held.items():
        if not 0 <= i <= MAX_INDEX:
            raise FecError(f"fragment index {i} outside 0..{MAX_INDEX}")
        if len(c) > length:
            length = len(c)
    if length == 0:
        raise FecError("empty chunks")
    for i, c in held.items():
        if len(c) != length and i != k - 1:
            raise FecError(f"chunk {i} is {len(c)} bytes where the others are {length}")
    last = held.get(k - 1)
    if last is not None and len(last) < length:
        held = {**held, k - 1: bytes(last).ljust(length, b"\0")}
    missing = tuple(i for i in range(k) if i not in held)
    if not missing:
        return b"".join([held[i] for i in range(k)])
    rows = tuple(sorted(i - k for i in held if i >= k)[: len(missing)])
    known = tuple(i for i in range(k) if i in held)
    m = _decoder(k, missing, rows, known)
    solved = _apply(m, [held[k + j] for j in rows] + [held[i] for i in known], length)
    out = dict.fromkeys(range(k), b"")
    for i in known:
        out[i] = held[i]
    for n, i in enumerate(missing):
        out[i] = solved[n]
    return b"".join(out.values())


def rebuild(k: int, held: Mapping[int, bytes]) -> list[bytes]:
    """The ``k`` data chunks from any ``k`` distinct chunks held: index ``0..k-1`` is
    a data chunk, ``k+j`` parity row ``j``. All chunks are L bytes, except that data
    chunk ``k-1`` may be shorter (its trailing pad left out); every chunk returned is
    L bytes (the last one padded with zeros). Raises :class:`FecError` when fewer than
    ``k`` distinct chunks are held or they are inconsistent."""
    joined = rebuild_joined(k, held)
    length = len(joined) // k
    return [joined[i * length : (i + 1) * length] for i in range(k)]
