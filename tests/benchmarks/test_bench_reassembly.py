"""Reassembly + decode + XML throughput of the 658-byte record (C=2, K=144, all four
optional blocks), fragments shuffled, at S = 11, 51 and 242.

Run: pytest tests/benchmarks --benchmark-enable --benchmark-group-by=param:size
Each round reassembles BATCH messages; messages/s = BATCH / mean. The baseline in the
same group is what a straightforward implementation does: collect fragments, join
them and parse with the construct reference declaration, then build the document.
"""

from __future__ import annotations

import random
import time
from statistics import median

import pytest

from collector.core import wire
from collector.core.assemble import assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.core.xmldoc import Transport, build_document
from collector.testing.examples import example_record

BATCH = 50
#: rounds per measurement (after one warm-up round that fills the per-exponent tables)
ROUNDS = 30
SIZES = [11, 51, 242]


def _workload(size: int) -> list[Uplink]:
    rng = random.Random(size)
    data = wire.encode_record(example_record())
    ups = []
    for m in range(BATCH):
        dev = f"70B3D57ED0{m:06X}"
        frags = wire.fragment(m % 256, data, size)
        rng.shuffle(frags)
        ups += [Uplink(dev, 16, f, 1_795_500_000_000 + i, data_rate="SF9BW125") for i, f in enumerate(frags)]
    return ups


def run_pipeline(ups: list[Uplink]) -> int:
    r = Reassembler(Settings())
    done = 0
    for u in ups:
        for m in r.feed(u, 0.0).closed:
            out = assemble(m)
            done += out.complete
    return done


def run_baseline(ups: list[Uplink]) -> int:
    held: dict[tuple[str, int], dict[int, wire.Fragment]] = {}
    done = 0
    for u in ups:
        f = wire.parse_fragment(u.payload)
        frags = held.setdefault((u.dev_eui, f.msg_id), {})
        frags[f.index] = f
        count = frags[0].count if 0 in frags else None
        if count is not None and len(frags) == count:
            data = b"".join(frags[i].chunk for i in range(count))
            p = wire.RECORD_V1.parse(data)
            req = p.required.value
            k = req.sample_count
            rec = wire.Record(
                device_serial=req.device_serial, record_seq=req.record_seq, start_time=req.start_time,
                interval_s=req.interval_s, flags=req.flags, fw_major=req.fw_major, fw_minor=req.fw_minor,
                battery_mv=req.battery_mv, temp_centi=req.temp_centi,
                channels=[wire.Channel(c.unit, c.exponent, list(req.samples[i * k:(i + 1) * k]))
                          for i, c in enumerate(req.channels)],
                location=wire.Location(**{n: p.location[n] for n in ("lat_e7", "lon_e7", "alt_m", "hdop_dm", "fix")}),
                diagnostics=wire.Diagnostics(*[v for n, v in p.diagnostics.items() if not n.startswith("_")]),
                config=wire.Config(*[v for n, v in p.config.items() if not n.startswith("_")]),
                site=wire.Site(p.site.label),
            )
            build_document(rec, u.dev_eui, Transport(f.msg_id, count, count, 0, 0), True)
            del held[(u.dev_eui, f.msg_id)]
            done += 1
    return done


@pytest.mark.parametrize("size", SIZES)
def test_reassembly_pipeline(benchmark, size):
    ups = _workload(size)
    benchmark.extra_info.update(size=size, batch=BATCH, fragments=len(ups))
    assert benchmark.pedantic(run_pipeline, (ups,), rounds=ROUNDS, warmup_rounds=1) == BATCH


@pytest.mark.parametrize("size", SIZES)
def test_baseline_construct_decode(benchmark, size):
    ups = _workload(size)
    benchmark.extra_info.update(size=size, batch=BATCH, fragments=len(ups))
    assert benchmark.pedantic(run_baseline, (ups,), rounds=ROUNDS, warmup_rounds=1) == BATCH


@pytest.mark.parametrize("size", SIZES)
def test_pipeline_to_construct_interleaved(benchmark, size):
    """The pipeline and the baseline in turn within every round, each timed with the
    process's CPU time: the ratio ``tox -e bench`` guards (reports/bench_guard.py).
    Run one after the other (the two tests above), the two see different load on a
    shared machine and their ratio was seen to move by a factor of five."""
    ups = _workload(size)
    times: dict[str, list[float]] = {"pipeline": [], "construct": []}

    def one_round() -> None:
        for name, run in (("pipeline", run_pipeline), ("construct", run_baseline)):
            t0 = time.process_time()
            assert run(ups) == BATCH
            times[name].append(time.process_time() - t0)

    benchmark.pedantic(one_round, rounds=ROUNDS, warmup_rounds=1)
    med = {k: median(v[1:] or v) for k, v in times.items()}  # the warm-up round left out
    benchmark.extra_info.update(size=size, batch=BATCH,
                                pipeline_messages_per_s=round(BATCH / med["pipeline"]),
                                construct_messages_per_s=round(BATCH / med["construct"]),
                                pipeline_to_construct=round(med["construct"] / med["pipeline"], 3))
