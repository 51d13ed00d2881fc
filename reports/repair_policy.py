"""The repair loop and the redundancy policy in a closed loop, in-process: the
reference device (collector.core.device), the reassembler and the collector's repair
decisions (collector.core.repair) - the code the service runs - with seeded
independent loss on uplinks and downlinks. Writes reports/repair_policy.md.

Model: EU868 DR0, the 658-byte record at S = 51 (k = 14). Each device sends its
records one after the other; a downlink the collector decided after uplink n
reaches the device in the receive window of uplink n + 1 (Class A: the network
server holds it until the device transmits), lost with the downlink loss rate.
Airtime counts uplinks only (fragments, parity, repairs, polls), against v1's 14
fragments per record and against the erasure channel's limit, k / (1 - p) frames of
S bytes (reports/v2_sweep.py, limit_airtime_s). Once per uplink the loop calls
after_uplink, as the service does (a lost NEED or ACK is only repeated there).

Run: python reports/repair_policy.py [--records 400] [--seed 1]
"""

from __future__ import annotations

import argparse
import random
import time
from pathlib import Path

from collector.core import lorawan, wire
from collector.core.device import Device
from collector.core.reassembly import Reassembler, Settings
from collector.core.repair import DeviceRepair, Policy
from collector.core.uplink import Uplink
from collector.core.wire2 import encode_downlink
from collector.testing.examples import example_record

DATA = wire.encode_record(example_record())
#: the bytes of each message, each its own: the loop spaces uplinks 1 s apart, so msg_id
#: wraps while the collector still remembers the rebuilt messages of 256 ids before (a
#: device under the duty cycle takes days), and a fragment equal to a remembered one,
#: with nothing newer open under its msg_id, is a late duplicate of it
#: (docs/reassembly.md, "Duplicates after close"); nothing here decodes the record
RECORDS = [random.Random(f"record-{i}").randbytes(len(DATA)) for i in range(512)]
SIZE = 51
DR0 = lorawan.EU868.dr(0)
FRAME_AIRTIME = DR0.time_on_air(SIZE)
K = -(-len(DATA) // (SIZE - 4))
V1_AIRTIME = sum(DR0.time_on_air(n) for n in wire.fragment_lengths(len(DATA), SIZE))


def run(loss: float, records: int, seed: int, parity: int, repair: bool, adaptive: bool,
        ack_repeats: int = 0) -> dict:
    # the same radio for every ack_repeats: the rows differ by the policy alone
    rng = random.Random(f"{seed}-{loss}-{parity}-{repair}-{adaptive}")
    policy = Policy(adaptive=adaptive, ack_repeats=ack_repeats)
    dev_eui = "70B3D57ED0000001"
    dev = Device(parity=parity)
    col = DeviceRepair(dev_eui)
    reasm = Reassembler(Settings(message_timeout=1e9))
    whole = airtime = uplinks = first_round = downlinks = 0
    t = 0.0
    waiting: bytes | None = None  # the downlink the network server holds
    for i in range(records):
        dev.submit(RECORDS[i % len(RECORDS)], SIZE, t)
        rebuilt_before_poll = False
        while (p := dev.next_uplink(t)) is not None:
            t += 1.0
            uplinks += 1
            airtime += DR0.time_on_air(len(p))
            if waiting is not None:  # the receive window of this uplink
                if rng.random() >= loss:
                    dev.downlink(waiting, t)
                waiting = None
                col.delivered()
            if rng.random() < loss:
                continue
            res = reasm.feed(Uplink(dev_eui, 17, p, int(t * 1000)), t)
            if res.status == "poll" and res.poll is not None:
                col.poll(p[0], p[2], p[3], policy, res.poll.closed or res.poll.rebuilt, res.poll.held or None)
            else:
                col.fragment(p[0], p[1], p[2], policy)
                for m in res.closed:
                    if m.close_reason == "complete":
                        whole += 1
                        rebuilt_before_poll = rebuilt_before_poll or not col.messages[p[0]].polls
                        col.rebuilt(p[0], policy)
            col.after_uplink(policy)
            if repair and col.has_due:
                cmds = col.commands(DR0.max_payload)
                if cmds:
                    waiting = encode_downlink(cmds)
                    col.handed_over(cmds)
                    downlinks += 1
        first_round += rebuilt_before_poll
    return {"whole": whole / records, "first": first_round / records, "uplinks": uplinks / records,
            "airtime": airtime / records / V1_AIRTIME,
            "limit": airtime / max(1, whole) / (K / (1 - loss) * FRAME_AIRTIME), "downlinks": downlinks / records, "r": col.r_wanted if col.r_wanted is not None else parity}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).with_name("repair_policy.md")))
    a = ap.parse_args()
    t0 = time.perf_counter()
    rows = []
    for loss in (0.05, 0.10, 0.20, 0.30):
        v1 = (1 - loss) ** 14
        rows.append(f"| {loss:.0%} | v1 (computed) | {v1:.1%} | – | 14.0 | 1.00 | – | – | – |")
        for label, parity, repair, adaptive, acks in (("v2 r=2, no downlinks", 2, False, False, 0),
                                                      ("v2 r=2 + repair", 2, True, False, 0),
                                                      ("v2 adaptive + repair", 2, True, True, 0),
                                                      ("v2 adaptive + repair, lost ACK repeated", 2, True, True, 3)):
            r = run(loss, a.records, a.seed, parity, repair, adaptive, acks)
            rows.append(f"| {loss:.0%} | {label} | {r['whole']:.1%} | {r['first']:.1%} | {r['uplinks']:.1f} | "
                        f"{r['airtime']:.2f} | {r['limit']:.3f} | {r['downlinks']:.2f} | {r['r']} |")
    took = time.perf_counter() - t0
    text = f"""# The repair loop and the redundancy policy, closed loop

Generated by `python reports/repair_policy.py --records {a.records} --seed {a.seed}` in {took:.0f} s: the
reference device, the reassembler and the collector's repair decisions in one loop,
{a.records} records of 658 bytes per row at EU868 DR0 (S = 51, k = 14), independent loss
on uplinks and downlinks at the same rate; a downlink reaches the device in the
receive window of its next uplink. "first round" counts records rebuilt before the
device's first poll; airtime is the uplinks' time on air per record against v1's 14
fragments; "airtime × limit" is the uplinks' time on air per record rebuilt against
the erasure channel's limit, k / (1 - p) frames of S bytes; "downlinks/record"
counts the downlinks the collector queued (each one is gateway airtime under the
downlink duty cycle); "final r" is the parity the collector wanted at the end.
"lost ACK repeated" is the policy with `ack_repeats = 3` (the default is 0: an ACK
lost on the air is answered only when the device, having sent all its rows, polls).

| loss | setting | records whole | first round | uplinks/record | airtime × v1 | airtime × limit | downlinks/record | final r |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(rows) + "\n"
    Path(a.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
