"""One device, the reassembler and the collector's repair side over a seeded lossy
radio, in-process: the smallest closed loop that shows what the repair loop
delivers and what it costs in downlinks (``python -m devicesim.radio_loop``).

Model: the device's records are all queued at once (a backlog, as after a gateway
outage), one uplink opportunity per step; a downlink the collector handed over after
uplink n reaches the device in the receive window of uplink n + 1 (Class A), each
crossing of the radio lost independently with probability ``loss`` (uplinks) or
``down_loss`` (downlinks), drawn from the loop's own seeded stream. The collector
side is :class:`devicesim.collector_side.CoreCollector`, i.e. the decisions of
:mod:`collector.core.repair` the service makes.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, replace

from collector.core import wire
from collector.core.device import Device
from collector.core.reassembly import Reassembler, Settings
from collector.core.repair import Policy
from collector.core.uplink import Uplink
from collector.testing.examples import example_record
from devicesim.collector_side import CoreCollector

DEV = "70B3D57ED005A1B2"


@dataclass(frozen=True)
class LoopResult:
    records: int
    rebuilt: int
    downlinks: int
    uplinks: int
    given_up: int
    evicted: int
    needs_repeated: int


def run(loss: float, seed: int, records: int = 40, parity: int = 2, policy: Policy | None = None,
        down_loss: float | None = None) -> LoopResult:
    rng = random.Random(f"radio-{seed}-{loss}-{parity}")
    down = loss if down_loss is None else down_loss
    dev = Device(parity=parity)
    col = CoreCollector(policy=replace(policy or Policy(), adaptive=False))
    reasm = Reassembler(Settings(deadline_policy="fixed", message_timeout=1e9))
    for n in range(records):
        rec = example_record()
        rec.record_seq = n
        dev.submit(wire.encode_record(rec), 51, 0.0)
    rebuilt = 0
    waiting: bytes | None = None
    t = 0.0
    uplinks = downlinks = 0
    while not dev.idle and t < 1e6:
        t += 10.0
        payload = dev.next_uplink(t)
        if payload is None:
            continue
        uplinks += 1
        if waiting is not None:  # the receive window of this uplink
            if rng.random() >= down:
                dev.downlink(waiting, t + 1)
            waiting = None
        if rng.random() < loss:
            continue
        res = reasm.feed(Uplink(DEV, 17, payload, int(t * 1000)), t)
        rebuilt += sum(1 for m in res.closed if m.close_reason == "complete")
        out, _ = col.uplink(DEV, payload, "EU868", "SF12BW125", t)
        if out is not None:
            col.handed_over(DEV, out)
            waiting = out
            downlinks += 1
    s = dev.stats
    return LoopResult(records, rebuilt, downlinks, uplinks, s.given_up, s.evicted,
                      col.devices[DEV].counts.get("needs_repeated", 0) if DEV in col.devices else 0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--records", type=int, default=200)
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args()
    print("| loss both ways | parity | NEED repeated | records rebuilt | downlinks/record | uplinks/record |")
    print("|---|---|---|---|---|---|")
    for loss in (0.20, 0.25):
        for parity in (0, 2):
            for repeats in (0, 3):
                rs = [run(loss, seed, a.records, parity, Policy(repeats=repeats)) for seed in range(a.seeds)]
                n = sum(r.records for r in rs)
                print(f"| {loss:.0%} | {parity} | {'yes' if repeats else 'no'} | "
                      f"{sum(r.rebuilt for r in rs)} / {n} | {sum(r.downlinks for r in rs) / n:.2f} | "
                      f"{sum(r.uplinks for r in rs) / n:.1f} |")


if __name__ == "__main__":
    main()
