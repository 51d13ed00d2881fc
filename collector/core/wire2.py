"""Wire format v2: coded fragments, polls and downlink commands on FPort 17
(``docs/spec/wire-format-v2.md`` sections 2, 3 and 5).

Every uplink starts with ``msg_id, index, k, pad|sent``. Index 0..k-1 is a data chunk,
k..254 a parity row (:mod:`collector.core.fec`), 255 a poll. The record itself (and
so the XML document) is that of wire format v1.

Bad inputs (section 5) raise :class:`collector.core.wire.FragmentError` with a stable
``code`` and a sentence saying what is wrong, so the service answers 400 with it and
``collector decode`` refuses the same bytes.

Pure code: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from collector.core import fec
from collector.core.wire import FragmentError

FPORT_V2 = 17
#: the index byte of a poll
POLL = 255
HEADER_LEN = 4
MIN_SIZE = 5
MAX_SIZE = 242
MAX_K = fec.MAX_K
#: REDUNDANCY's largest r
MAX_REDUNDANCY = 32

CMD_ACK = 0x01
CMD_NEED = 0x02
CMD_REDUNDANCY = 0x03


@dataclass(frozen=True, slots=True)
class V2Fragment:
    msg_id: int
    #: 0..k-1 data chunk, k..254 parity row ``index - k``
    index: int
    k: int
    pad: int
    #: S, the full fragment length (header included); for data chunk k-1, which leaves
    #: out its pad, its length plus ``pad``
    size: int
    #: the chunk as it came (data chunk k-1 without its pad bytes)
    chunk: bytes

    @property
    def is_parity(self) -> bool:
        return self.index >= self.k

    @property
    def chunk_len(self) -> int:
        """L = S - 4."""
        return self.size - HEADER_LEN

    @property
    def record_len(self) -> int:
        """B = k*L - pad."""
        return self.k * self.chunk_len - self.pad


_new = object.__new__
_SETTERS = tuple(getattr(V2Fragment, f).__set__ for f in ("msg_id", "index", "k", "pad", "size", "chunk"))


def _fragment(msg_id: int, index: int, k: int, pad: int, size: int, chunk: bytes) -> V2Fragment:
    """``V2Fragment(...)`` for :func:`parse_v2`, one per uplink: a frozen dataclass's
    ``__init__`` sets each field through ``object.__setattr__``, which measured about
    2 us per fragment more than writing the slots directly, as here."""
    f = _new(V2Fragment)
    s_msg, s_index, s_k, s_pad, s_size, s_chunk = _SETTERS
    s_msg(f, msg_id)
    s_index(f, index)
    s_k(f, k)
    s_pad(f, pad)
    s_size(f, size)
    s_chunk(f, chunk)
    return f


@dataclass(frozen=True, slots=True)
class V2Poll:
    msg_id: int
    k: int
    #: distinct fragments of the message the device has sent so far
    sent: int


def parse_v2(payload: bytes) -> V2Fragment | V2Poll:
    """Parse one FPort-17 uplink. Raises :class:`FragmentError` on the bad inputs of
    section 5 (and on a last data chunk whose implied S is out of range)."""
    n = len(payload)
    if n < HEADER_LEN:
        raise FragmentError("v2_short", f"v2 uplink is {n} byte(s); the header alone is {HEADER_LEN}")
    msg_id, index, k, fourth = payload[0], payload[1], payload[2], payload[3]
    if k == 0 or k == 255:
        raise FragmentError("v2_k", f"k is {k}; a v2 message has 1..{MAX_K} data chunks")
    if index == POLL:
        if n != HEADER_LEN:
            raise FragmentError("v2_poll_length", f"a poll (index 255) is exactly 4 bytes, not {n}")
        return V2Poll(msg_id, k, fourth)
    if n < MIN_SIZE:
        raise FragmentError("v2_short", f"v2 fragment is {n} bytes; at least {MIN_SIZE}")
    if n > MAX_SIZE:
        raise FragmentError("v2_long", f"v2 fragment is {n} bytes; at most {MAX_SIZE}")
    pad = fourth
    if index == k - 1:  # the last data chunk leaves out its pad
        size = n + pad
        if size > MAX_SIZE:
            raise FragmentError(
                "v2_pad", f"last data chunk of {n} bytes with pad {pad} implies a fragment size of {size}; "
                f"at most {MAX_SIZE}")
    else:
        size = n
        if pad >= size - HEADER_LEN:
            raise FragmentError(
                "v2_pad", f"pad {pad} is not below the chunk length {size - HEADER_LEN} of a {size}-byte fragment")
    return _fragment(msg_id, index, k, pad, size, bytes(payload[HEADER_LEN:]))


# --------------------------------------------------------------------------- encoding


def newer(a: int, b: int) -> bool:
    """msg_id ``a`` is after ``b`` (modulo 256, within half the space)."""
    return 0 < (a - b) % 256 < 128


def behind(newest: int, msg_id: int) -> int:
    """How many msg_ids ``msg_id`` lies behind the device's ``newest`` (modulo 256): a
    device keeping its last ``keep`` messages still holds it while this is below ``keep``."""
    return (newest - msg_id) % 256


def geometry(record_len: int, size: int) -> tuple[int, int, int]:
    """``(k, L, pad)`` of a ``record_len``-byte record at fragment size ``size``.
    Raises ValueError when the size is out of range or the record needs k > 254."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"fragment size {size} outside {MIN_SIZE}..{MAX_SIZE}")
    if record_len < 1:
        raise ValueError("empty record")
    length = size - HEADER_LEN
    k = max(1, -(-record_len // length))
    if k > MAX_K:
        raise ValueError(f"a {record_len}-byte record needs {k} chunks at size {size}; v2 allows at most {MAX_K}")
    return k, length, k * length - record_len


def chunks(record: bytes, size: int) -> tuple[list[bytes], int]:
    """The record padded with zeros, cut into its k chunks of L bytes; and ``pad``."""
    k, length, pad = geometry(len(record), size)
    padded = bytes(record) + bytes(pad)
    return [padded[i * length : (i + 1) * length] for i in range(k)], pad


def _check_msg_id(msg_id: int) -> None:
    if not 0 <= msg_id <= 255:
        raise ValueError(f"msg_id {msg_id} outside 0..255")


def encode_message(record: bytes, msg_id: int, size: int, parity: int) -> list[bytes]:
    """The uplinks of one message: the k data fragments, then ``parity`` parity rows."""
    _check_msg_id(msg_id)
    data, pad = chunks(record, size)
    k = len(data)
    if parity < 0 or k + parity - 1 > fec.MAX_INDEX:
        raise ValueError(f"{parity} parity rows for k={k}: k + rows must be at most {fec.MAX_INDEX + 1}")
    head = bytes((msg_id, 0, k, pad))
    out = [bytes((msg_id, i, k, pad)) + c for i, c in enumerate(data)]
    if pad:  # data chunk k-1 leaves out its pad
        out[-1] = out[-1][:-pad]
    for j, row in enumerate(fec.parity_rows(data, 0, parity)):
        out.append(head[:1] + bytes((k + j,)) + head[2:] + row)
    return out


def parity_fragment(record: bytes, msg_id: int, size: int, row: int) -> bytes:
    """Parity row ``row`` of a message, as an uplink."""
    _check_msg_id(msg_id)
    data, pad = chunks(record, size)
    k = len(data)
    if row < 0 or k + row > fec.MAX_INDEX:
        raise ValueError(f"parity row {row} of a {k}-chunk message: k + row must be at most {fec.MAX_INDEX}")
    return bytes((msg_id, k + row, k, pad)) + fec.parity_rows(data, row, 1)[0]


def poll(msg_id: int, k: int, sent: int) -> bytes:
    _check_msg_id(msg_id)
    if not 1 <= k <= MAX_K:
        raise ValueError(f"k {k} outside 1..{MAX_K}")
    if not 0 <= sent <= 255:
        raise ValueError(f"sent {sent} outside 0..255")
    return bytes((msg_id, POLL, k, sent))


# --------------------------------------------------------------------------- decoding whole messages


def check_consistent(a: V2Fragment, b: V2Fragment) -> str | None:
    """Why two fragments of the same ``msg_id`` cannot belong to one message (other
    ``k``, ``pad`` or ``S``), or None when they can."""
    if a.k != b.k:
        return f"k {b.k} contradicts k {a.k}"
    if a.pad != b.pad:
        return f"pad {b.pad} contradicts pad {a.pad}"
    if a.size != b.size:
        return f"fragment size {b.size} contradicts size {a.size}"
    return None


def rebuild_record(frags: Iterable[V2Fragment]) -> bytes:
    """The record from fragments of one message (any order, duplicates allowed, any k
    distinct). Raises :class:`FragmentError` when they disagree or are too few."""
    held: dict[int, V2Fragment] = {}
    first: V2Fragment | None = None
    for f in frags:
        if first is None:
            first = f
        elif f.msg_id != first.msg_id:
            raise FragmentError("msg_id_mixed", f"fragments of messages {first.msg_id} and {f.msg_id}")
        else:
            why = check_consistent(first, f)
            if why:
                raise FragmentError("v2_conflict", f"fragment {f.index} of message {f.msg_id}: {why}")
        old = held.get(f.index)
        if old is not None and old.chunk != f.chunk:
            raise FragmentError("fragment_conflict", f"two different fragments with index {f.index}")
        held[f.index] = f
    if first is None:
        raise FragmentError("v2_empty", "no fragments")
    if len(held) < first.k:
        raise FragmentError(
            "fragments_missing", f"{len(held)} distinct fragment(s) of message {first.msg_id}; {first.k} needed")
    return fec.rebuild_joined(first.k, {i: f.chunk for i, f in held.items()})[: first.record_len]


# --------------------------------------------------------------------------- downlinks


@dataclass(frozen=True, slots=True)
class Ack:
    msg_id: int


@dataclass(frozen=True, slots=True)
class Need:
    msg_id: int
    n: int


@dataclass(frozen=True, slots=True)
class Redundancy:
    r: int


Command = Ack | Need | Redundancy


def encode_downlink(commands: Sequence[Command]) -> bytes:
    """The FRMPayload carrying ``commands`` in order. ValueError on an argument out of
    range (NEED's n 1..255, REDUNDANCY's r 0..32, msg_id 0..255)."""
    out = bytearray()
    for c in commands:
        if isinstance(c, Ack):
            _check_msg_id(c.msg_id)
            out += bytes((CMD_ACK, c.msg_id))
        elif isinstance(c, Need):
            _check_msg_id(c.msg_id)
            if not 1 <= c.n <= 255:
                raise ValueError(f"NEED n {c.n} outside 1..255")
            out += bytes((CMD_NEED, c.msg_id, c.n))
        elif isinstance(c, Redundancy):
            if not 0 <= c.r <= MAX_REDUNDANCY:
                raise ValueError(f"REDUNDANCY r {c.r} outside 0..{MAX_REDUNDANCY}")
            out += bytes((CMD_REDUNDANCY, c.r))
        else:
            raise TypeError(f"not a downlink command: {c!r}")
    return bytes(out)


def decode_downlink(payload: bytes) -> list[Command]:
    """The commands of a downlink, as a device reads them: it stops at a command byte
    it does not know and at a command cut short. A known command whose argument is
    out of range (NEED 0, REDUNDANCY above 32) is skipped: its length is known, so the
    commands after it are still read."""
    out: list[Command] = []
    i, n = 0, len(payload)
    while i < n:
        cmd = payload[i]
        if cmd == CMD_ACK and i + 2 <= n:
            out.append(Ack(payload[i + 1]))
            i += 2
        elif cmd == CMD_NEED and i + 3 <= n:
            if payload[i + 2]:
                out.append(Need(payload[i + 1], payload[i + 2]))
            i += 3
        elif cmd == CMD_REDUNDANCY and i + 2 <= n:
            if payload[i + 1] <= MAX_REDUNDANCY:
                out.append(Redundancy(payload[i + 1]))
            i += 2
        else:
            break
    return out
