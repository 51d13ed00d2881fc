"""A device that reuses a msg_id (it restarted, or msg_id wrapped) while the collector
still remembers the earlier message of that msg_id, and a record that repeats whole
fragments of the one before it (a channel that reads the same for hours; here only the
record's sequence number differs, so all fragments but the first and the one with the
CRC are the same bytes).

The contract: a fragment equal to one already held changes nothing, also shortly after
its message closed (`duplicate_window`, 1 hour). A rebuilt v2 message is remembered
longer while its device may still send rows for it (up to `repair_hold`), but once a
new message with its msg_id is open the device has moved on: then only the hour
applies, and the shared chunks are the new message's."""

from __future__ import annotations

import dataclasses

from collector.core import wire, wire2
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.testing.examples import example_record

DEV = "70B3D57ED005A1B2"
T0 = 1_795_500_000_000


def record(seq: int) -> bytes:
    return wire.encode_record(dataclasses.replace(example_record(), record_seq=seq))


def test_the_records_share_all_fragments_but_two():
    for a, b in ((wire.fragment(0, record(1), 51), wire.fragment(0, record(2), 51)),
                 (wire2.encode_message(record(1), 0, 51, 0), wire2.encode_message(record(2), 0, 51, 0))):
        assert a[0] != b[0] and sum(x == y for x, y in zip(a, b, strict=True)) == len(a) - 2


def _run(encode, fport: int, later: float) -> tuple[list, list[str]]:
    """Record 1, then record 2 under the same msg_id ``later`` seconds on."""
    r = Reassembler(Settings())
    closed, statuses = [], []
    n = 0
    for seq, t in ((1, 0.0), (2, later)):
        for p in encode(record(seq)):
            n += 1
            res = r.feed(Uplink(DEV, fport, p, T0 + n * 1000, data_rate="SF12BW125", region="EU868"), t + n)
            statuses.append(res.status)
            closed.extend(res.closed)
    return closed, statuses


def v2(rec: bytes) -> list[bytes]:
    return wire2.encode_message(rec, 0, 51, 0)


def test_v2_a_reused_msg_id_after_the_hour_rebuilds_from_its_own_k_fragments():
    """Two hours on: past the duplicate window, within repair_hold, and the device's
    newest msg_id is the reused one (behind 0), so the old message is still
    remembered for its rows - until the new message opens."""
    closed, statuses = _run(v2, wire2.FPORT_V2, later=7200.0)
    assert statuses.count("duplicate") == 0
    assert [m.close_reason for m in closed] == ["complete", "complete"]
    assert len(closed[1].fragments) == len(v2(record(2)))


def test_v2_rows_after_the_rebuild_with_nothing_newer_open_are_still_duplicates():
    """What the remembered message is for: its device did not hear the ACK and sends
    the rest of its rows, which match the rebuilt record, hours after the rebuild."""
    r = Reassembler(Settings())
    frags = wire2.encode_message(record(1), 0, 51, 3)
    for i, p in enumerate(frags[:14]):
        r.feed(Uplink(DEV, wire2.FPORT_V2, p, T0 + i, region="EU868"), float(i))
    for j, p in enumerate(frags[14:]):
        assert r.feed(Uplink(DEV, wire2.FPORT_V2, p, T0 + 7200_000 + j, region="EU868"), 7200.0 + j).status == "duplicate"


def test_within_the_hour_the_shared_fragments_are_duplicates_as_the_contract_says():
    """v1 and v2 alike: the same bytes under the same msg_id and index shortly after
    the message closed change nothing, even where they are a new record's."""
    for encode, fport in ((lambda rec: wire.fragment(0, rec, 51), wire.FPORT), (v2, wire2.FPORT_V2)):
        closed, statuses = _run(encode, fport, later=600.0)
        n = len(encode(record(1)))
        assert statuses[n:].count("duplicate") == n - 2, (fport, statuses)
        assert closed[0].close_reason == "complete" and len(closed) == 1


def test_v2_a_chunk_the_old_message_rebuilt_without_is_the_new_ones_too():
    """Within the hour: the old message lost chunk 5 and was rebuilt from a parity row,
    and the new record's chunk 5 equals what the old record had there. The chunks the
    old message held are duplicates (the contract); chunk 5 it never held, and with the
    new message open it is the new message's, not a row of the old one the device is
    still sending."""
    r = Reassembler(Settings())
    old = wire2.encode_message(record(1), 0, 51, 2)
    n = 0
    for i, p in enumerate(old[:16]):
        if i == 5:
            continue
        n += 1
        r.feed(Uplink(DEV, wire2.FPORT_V2, p, T0 + n, region="EU868"), float(n))
    new = v2(record(2))
    assert new[5] == old[5]
    statuses = [r.feed(Uplink(DEV, wire2.FPORT_V2, p, T0 + 600_000 + j, region="EU868"), 600.0 + j).status
                for j, p in enumerate(new)]
    assert statuses[0] == statuses[5] == "accepted"
    assert statuses.count("duplicate") == len(new) - 3  # all but chunk 0, chunk 5 and the CRC's
