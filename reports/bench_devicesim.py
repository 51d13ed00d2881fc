"""Simulator speed: simulated uplinks per second of wall time, one process.

Workloads:
- ``lorasim``: the radio-scalability workload of LoRaSim (Bor et al., MSWiM 2016):
  N devices in one gateway's cell, each sending a 20-byte PHY frame (7-byte payload)
  at SF12/125 kHz as Poisson traffic with a mean interval of 1000 s for 24 h, one
  channel, collisions with the capture effect, no duty cycle (as LoRaSim). Radio only:
  it stops at the gateway like LoRaSim; the data extraction rate (DER) is reported.
- ``baseline``: the same workload through LoRaSim's own algorithm
  (reports/lorasim_baseline.py), in the same run: the speed ratio is measured, not quoted.
- ``fleet-v1``: 10,000 EU868 devices for 24 h, ADR-chosen mixed data rates, one 658-byte
  record a day each, fragmented at the DR's N, duty cycle, full network-server model and
  the trace written (to a temporary file), through the staged engine;
  ``fleet-v1-loop``: the same through the closed loop (what the loop costs where no
  feedback is needed); ``fleet-v2``: the same fleet sending wire format v2 (parity 2,
  polls, repair rounds) with Class A downlinks, gateway duty cycle and half-duplex, the
  collector's repair core in-process, through the closed loop.

Run:  .venv/bin/python reports/bench_devicesim.py [--quick] [--sizes 1000,5000,20000]
Prints a table and writes reports/results/bench_devicesim.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from collector.core.lorawan import region as lookup_region
from devicesim.channel import sensitivity
from devicesim.config import DRPolicy, ScheduleConfig, SimConfig
from devicesim.sim import simulate
from devicesim.trace import write_trace

sys.path.insert(0, str(Path(__file__).resolve().parent))
import lorasim_baseline  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def lorasim_config(devices: int, hours: float = 24.0, seed: int = 1) -> SimConfig:
    c = SimConfig(region="EU868", hours=hours, seed=seed)
    ch = c.channel
    # cell radius: the distance at which the mean link reaches SF12 sensitivity (LoRaSim's maxDist)
    budget = c.devices.tx_power_dbm - sensitivity(12, 125_000) - ch.pl_d0_db
    c.devices.radius_m = ch.d0_m * 10 ** (budget / (10 * ch.gamma))
    c.devices.count = devices
    c.devices.schedule = ScheduleConfig(kind="poisson", mean_interval_s=1000.0, payload_bytes=7)
    c.devices.dr = DRPolicy(kind="fixed", dr=0)
    c.devices.duty_cycle = False
    c.devices.min_gap_s = 0.0
    c.devices.channels_hz = (868_100_000,)
    c.network.enabled = False
    return c


def fleet_config(devices: int = 10_000, hours: float = 24.0, seed: int = 1, *, wire: str = "v1",
                 engine: str = "auto") -> SimConfig:
    c = SimConfig(region="EU868", hours=hours, seed=seed, format="ttn", engine=engine)
    c.devices.count = devices
    c.devices.wire = wire
    c.network.delivery.jitter_s = 2.0
    c.network.duplicate_p = 0.01
    c.gateways.count = 3
    return c


def run_baseline(devices: int, hours: float) -> dict:
    cfg = lorasim_config(devices, hours)
    air = lookup_region("EU868").dr(0).time_on_air(7)
    t0 = time.perf_counter()
    r = lorasim_baseline.run(devices, hours=hours, mean_interval_s=1000.0, airtime_s=air,
                             radius_m=cfg.devices.radius_m, seed=cfg.seed)
    wall = time.perf_counter() - t0
    return {"workload": "baseline", "devices": devices, "hours": hours, "uplinks": r["sent"],
            "wall_s": round(wall, 3), "uplinks_per_s": round(r["sent"] / wall), "der": round(r["der_lorasim"], 4)}


def run_lorasim(devices: int, hours: float) -> dict:
    cfg = lorasim_config(devices, hours)
    t0 = time.perf_counter()
    res = simulate(cfg)
    wall = time.perf_counter() - t0
    s = res.stats
    air = lookup_region("EU868").dr(0).time_on_air(7)
    offered = devices * air / 1000.0
    return {
        "workload": "lorasim", "devices": devices, "hours": hours, "uplinks": s.uplinks_sent,
        "wall_s": round(wall, 3), "uplinks_per_s": round(s.uplinks_sent / wall),
        "der": round(s.der, 4), "der_aloha_no_capture": round(math.exp(-2 * offered), 4),
        "offered_load_G": round(offered, 3),
    }


def run_fleet(devices: int, hours: float, wire: str = "v1", engine: str = "auto") -> dict:
    cfg = fleet_config(devices, hours, wire=wire, engine=engine)
    t0 = time.perf_counter()
    res = simulate(cfg)
    t_sim = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.jsonl")
        lines = write_trace(res, path)
        size = os.path.getsize(path)
    wall = time.perf_counter() - t0
    s = res.stats
    name = "fleet-" + wire + ("-loop" if engine == "loop" and wire == "v1" else "")
    extra = {}
    if s.engine == "loop":
        extra = {"downlinks_sent": s.downlinks_sent, "downlinks_received": s.downlinks_received,
                 "uplinks_deaf": s.uplinks_deaf, "rebuild_median_s": round(s.rebuild_median_s, 1),
                 "rebuild_p95_s": round(s.rebuild_p95_s, 1), "records_complete": s.records_complete,
                 "v2": dict(s.v2)}
    return {
        **extra,
        "workload": name, "devices": devices, "hours": hours, "uplinks": s.uplinks_sent,
        "records": s.records, "trace_lines": lines, "trace_mb": round(size / 1e6, 1),
        "sim_s": round(t_sim, 3), "wall_s": round(wall, 3), "uplinks_per_s": round(s.uplinks_sent / wall),
        "device_days_per_s": round(devices * hours / 24 / wall, 1), "der": round(s.der, 4),
        "delivery_ratio": round(s.delivery_ratio, 4), "per_dr": {k: v[0] for k, v in sorted(s.per_dr.items())},
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes (smoke run)")
    ap.add_argument("--sizes", default="1000,5000,20000", help="LoRaSim workload device counts")
    ap.add_argument("--fleet", type=int, default=10_000, help="fleet workload device count")
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--baseline-sizes", default="1000,5000",
                    help="device counts the LoRaSim-algorithm baseline runs (its time grows with them)")
    ap.add_argument("--out", default=str(RESULTS / "bench_devicesim.json"))
    a = ap.parse_args(argv)
    sizes = [50, 100] if a.quick else [int(x) for x in a.sizes.split(",")]
    fleet = 100 if a.quick else a.fleet
    hours = 2.0 if a.quick else a.hours
    base_sizes = [50] if a.quick else [int(x) for x in a.baseline_sizes.split(",") if x]
    rows = []
    for n in sizes:
        rows.append(run_lorasim(n, hours))
        if n in base_sizes:
            rows.append(run_baseline(n, hours))
            rows[-1]["speedup"] = round(rows[-2]["uplinks_per_s"] / max(1, rows[-1]["uplinks_per_s"]), 1)
    rows.append(run_fleet(fleet, hours))
    rows.append(run_fleet(fleet, hours, engine="loop"))
    rows.append(run_fleet(fleet, hours, wire="v2"))
    rows[-2]["loop_cost"] = round(rows[-2]["wall_s"] / rows[-3]["wall_s"], 2)
    rows[-1]["vs_fleet_v1"] = round(rows[-1]["wall_s"] / rows[-3]["wall_s"], 2)
    print(f"{'workload':<14} {'devices':>8} {'uplinks':>10} {'wall s':>8} {'uplinks/s':>10} {'DER':>7}  notes")
    for r in rows:
        if r["workload"] == "lorasim":
            note = f"G={r['offered_load_G']}, ALOHA e^-2G={r['der_aloha_no_capture']}"
        elif r["workload"] == "baseline":
            note = f"LoRaSim's count (sent - collisions) / sent; lorasim row is {r['speedup']}x faster"
        else:
            note = (f"records={r['records']}, trace {r['trace_lines']} lines/{r['trace_mb']} MB, "
                    f"delivered {r['delivery_ratio']:.1%}")
            if "loop_cost" in r:
                note += f", {r['loop_cost']}x the staged wall time"
            if "vs_fleet_v1" in r:
                note += f", downlinks {r['downlinks_sent']}, {r['vs_fleet_v1']}x fleet-v1"
        print(f"{r['workload']:<14} {r['devices']:>8} {r['uplinks']:>10} {r['wall_s']:>8.2f} "
              f"{r['uplinks_per_s']:>10} {r['der']:>7.3f}  {note}")
    result = {
        "benchmark": "devicesim", "command": "python reports/bench_devicesim.py" + (" --quick" if a.quick else ""),
        "machine": {"python": sys.version.split()[0], "numpy": np.__version__, "platform": platform.platform(),
                    "processor": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                    "load_average": [round(x, 2) for x in os.getloadavg()]},
        "results": rows,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
