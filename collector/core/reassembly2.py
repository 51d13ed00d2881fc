"""Wire format v2 pieces of the reassembler (sans-IO; ``wire-format-v2.md`` §5).

Plain functions over plain data, used by :mod:`collector.core.reassembly` (which
owns the state machine of both versions) so that module does not grow by the v2
rules: what a poll event says, when a v2 fragment contradicts its open message, and
whether a fragment that arrives after its message was rebuilt is just one more
fragment of that same message.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from collector.core import fec, wire2
from collector.core.wire import FragmentError

#: fragments a v2 message is expected to take beyond its k data chunks before its
#: first poll, for its deadline: the usual 2 parity rows and the poll itself
PLANNED_EXTRA = 3
#: uplinks a repair round takes beyond the rows it needs: the poll the NEED answers
#: waits one more uplink for its downlink, and the poll after the rows
ROUND_EXTRA = 3


@dataclass(frozen=True, slots=True)
class PollEvent:
    """What the collector knows when a device polls for ``msg_id``."""

    msg_id: int
    k: int
    #: distinct fragments the device says it has sent
    sent: int
    #: distinct fragments of the message held (0 when none arrived or they belong to
    #: a message with another k)
    held: int
    #: the message was rebuilt (closed complete)
    rebuilt: bool
    #: the message is closed, rebuilt or not: answer ACK, there is nothing more to do
    closed: bool
    #: the message the poll is about, if one is held or remembered
    uid: str | None = None
    #: the deadline was moved later for the repair round this poll starts
    extended: bool = False

    @property
    def need(self) -> int:
        """Fragments still needed to rebuild (0 once rebuilt or closed)."""
        return 0 if self.closed else max(0, self.k - self.held)

    @property
    def lost(self) -> int:
        """Fragments the radio lost, as far as this poll tells (``sent`` - held)."""
        return max(0, self.sent - self.held)


def parse_held(payload: bytes) -> wire2.V2Fragment:
    """A stored v2 fragment (never a poll: polls are not held)."""
    f = wire2.parse_v2(payload)
    if isinstance(f, wire2.V2Poll):
        raise FragmentError("v2_poll_held", "a poll is not a fragment")
    return f


def conflict(k: int | None, pad: int | None, size: int | None, frag: wire2.V2Fragment) -> str | None:
    """Why ``frag`` cannot belong to an open message with this ``k``/``pad``/``S``
    (None: it can)."""
    if k is not None and frag.k != k:
        return f"k {frag.k} contradicts k {k}"
    if pad is not None and frag.pad != pad:
        return f"pad {frag.pad} contradicts pad {pad}"
    if size is not None and frag.size != size:
        return f"fragment size {frag.size} contradicts size {size}"
    return None


def rebuilt_chunks(payloads: Mapping[int, bytes]) -> tuple[wire2.V2Fragment, list[bytes]] | None:
    """The data chunks (padded) of a message from its held payloads, with one parsed
    fragment for its header; None when fewer than k are held or they disagree. The
    payloads were validated when they were held: only their agreement is checked."""
    if not payloads:
        return None
    try:
        head = parse_held(next(iter(payloads.values())))
    except FragmentError:
        return None
    k, lead, size = head.k, bytes((head.k, head.pad)), head.size
    if len(payloads) < k:
        return None
    chunks = {}
    for i, p in payloads.items():
        if p[2:4] != lead or (len(p) != size and not (i == k - 1 and len(p) + head.pad == size)):
            return None
        chunks[i] = p[4:]
    try:
        joined = fec.rebuild_joined(k, chunks)
    except fec.FecError:
        return None
    length = size - wire2.HEADER_LEN
    return head, [joined[n * length : (n + 1) * length] for n in range(k)]


def expected_payload(head: wire2.V2Fragment, chunks: list[bytes], index: int) -> bytes:
    """The uplink a device sends for ``index`` of the message ``chunks`` rebuilt."""
    k = head.k
    lead = bytes((head.msg_id, index, k, head.pad))
    if index < k:
        chunk = chunks[index]
        return lead + (chunk[: len(chunk) - head.pad] if index == k - 1 and head.pad else chunk)
    return lead + fec.parity_rows(chunks, index - k, 1)[0]


def deadline_fragments(k: int, max_index: int) -> int:
    """Uplinks a v2 message takes up to its first poll, for its deadline."""
    return max(k + PLANNED_EXTRA, max_index + 2)
