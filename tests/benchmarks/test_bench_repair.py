"""What the collector's repair bookkeeping costs on the v2 ingest path, side by side.

50 v2 messages of the 658-byte record at S = 51 (k = 14, r = 2, two data fragments
lost, then the poll), shuffled within each message, fed to:

- ``reassembler``: the reassembler alone, as the ingest path feeds it (the baseline);
- ``reassembler+repair``: the same, plus :meth:`RepairHub.on_uplink` for every uplink
  (per-device state, loss estimate, the ACK/NEED decision, the downlink and its
  store writes built - not run: the commit is shared with the uplink's own).

Run: pytest tests/benchmarks/test_bench_repair.py --benchmark-enable --benchmark-group-by=group
uplinks/s = uplinks / mean; the ratio of the two means is the overhead.
"""

from __future__ import annotations

import random

import pytest
from prometheus_client import CollectorRegistry

from collector.core import wire, wire2
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.service.config import ServiceConfig
from collector.service.repairs import RepairHub
from collector.testing.examples import example_record

BATCH = 50
SIZE = 51
DATA = wire.encode_record(example_record())


def workload() -> list[Uplink]:
    rng = random.Random(13)
    ups = []
    for m in range(BATCH):
        dev = f"70B3D57ED0{m:06X}"
        coded = wire2.encode_message(DATA, m % 256, SIZE, 2)
        lost = set(rng.sample(range(14), 2))
        frags = [f for i, f in enumerate(coded) if i not in lost]
        rng.shuffle(frags)
        frags.append(wire2.poll(m % 256, 14, 16))
        ups += [Uplink(dev, 17, f, 1_795_500_000_000 + i, data_rate="SF12BW125", region="EU868", source="generic")
                for i, f in enumerate(frags)]
    return ups


def run(ups: list[Uplink], repair: bool) -> int:
    r = Reassembler(Settings())
    hub = RepairHub(ServiceConfig(downlink_url="http://127.0.0.1:9/"), CollectorRegistry()) if repair else None
    route = {"kind": "generic"}
    ops = 0
    for u in ups:
        res = r.feed(u, 0.0)
        if hub is not None:
            ops += len(hub.on_uplink(u, route, res, 0.0).ops)
    return ops


@pytest.mark.benchmark(group="v2-repair-bookkeeping")
@pytest.mark.parametrize("kind", ["reassembler", "reassembler+repair"])
def test_repair_bookkeeping(benchmark, kind):
    ups = workload()
    benchmark.extra_info.update(kind=kind, uplinks=len(ups))
    benchmark.pedantic(run, args=(ups, kind != "reassembler"), rounds=20, warmup_rounds=1)
