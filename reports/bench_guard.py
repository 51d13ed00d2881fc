"""The benchmarks' guard: a fresh pytest-benchmark run against the recorded figures.

Every figure compared is a *ratio against a baseline measured in the same run*
(never a time, so a slower or busier machine does not fail it):

- ``pipeline/construct S=<size>``: the reassembly pipeline's messages/s over the
  construct baseline's. From ``test_pipeline_to_construct_interleaved`` (the two in
  turn within every round, CPU time, median round) when the run has it; else from
  the separate tests' best rounds (recorded figures older than that test): those run
  one after the other and see different load on a shared machine;
- ``<workload>/v1``: wire format v2 workloads over v1, from the interleaved rounds
  (``tests/benchmarks/test_bench_v2.py``);
- ``ingest CPU bare/<server>``: from a ``reports/bench_ingest.py`` result, the bare
  aiohttp handler's CPU per request over the collector's CPU per acknowledged uplink
  (the inverse of its ``cpu_ratio``: the median over every run at every connection
  count, each run beside the bare handler's run of the same round), so that here too
  higher is better and a drop of 25 % is a collector taking a third more CPU per
  uplink. CPU time, summed over the server's processes, does not depend on how
  busy the machine is the way throughput does.

The guard fails (exit 1, one line per figure) when a fresh ratio is more than
``--tolerance`` (25 %) below the recorded one in ``reports/results/``. A figure
present on one side only is listed and not judged. ``tox -e bench`` runs it after
the benchmarks. Usage::

    python reports/bench_guard.py FRESH.json [FRESH-INGEST.json] [--recorded reports/results/reassembly.json]
        [--recorded reports/results/ingest.json] [--tolerance 0.25]

Each file is read as what it holds (a pytest-benchmark JSON, or a ``bench_ingest.py``
result).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def ingest_ratios(doc: dict) -> dict[str, float]:
    """The same-run CPU ratios in a ``reports/bench_ingest.py`` result (bare over collector)."""
    runs: dict[str, list[float]] = {}
    for lv in doc.get("levels", []):
        for key, r in (lv.get("cpu_ratio_per_run") or {}).items():
            runs.setdefault(key, []).extend(float(x) for x in r if x)
    return {f"ingest CPU bare/{key}": 1.0 / statistics.median(r) for key, r in runs.items() if r and key != "gate"}


def ratios(doc: dict) -> dict[str, float]:
    """The same-run ratios in a pytest-benchmark JSON or a ``bench_ingest.py`` result."""
    if "levels" in doc:
        return ingest_ratios(doc)
    best: dict[tuple[str, object], float] = {}
    out: dict[str, float] = {}
    for b in doc.get("benchmarks", []):
        base = b["name"].split("[")[0]
        size = (b.get("params") or {}).get("size")
        best[(base, size)] = b["stats"]["min"]  # the best round: least disturbed by other load
        extra = b.get("extra_info") or {}
        if "pipeline_to_construct" in extra:
            out[f"pipeline/construct S={extra.get('size')}"] = float(extra["pipeline_to_construct"])
        for key, value in extra.items():
            if key.endswith("_to_v1") and not key.startswith("v1_"):
                out[f"{key[:-len('_to_v1')]}/v1"] = float(value)
    for (base, size), t in best.items():
        if (base == "test_reassembly_pipeline" and ("test_baseline_construct_decode", size) in best
                and f"pipeline/construct S={size}" not in out):
            out[f"pipeline/construct S={size}"] = best[("test_baseline_construct_decode", size)] / t
    return out


def judge(fresh: dict[str, float], recorded: dict[str, float], tolerance: float) -> tuple[list[str], list[str]]:
    """(lines for every figure, failures)."""
    lines, failures = [], []
    for name in sorted(set(fresh) | set(recorded)):
        if name not in fresh or name not in recorded:
            lines.append(f"{name}: only in the {'fresh run' if name in fresh else 'recorded figures'}; not judged")
            continue
        floor = recorded[name] * (1 - tolerance)
        line = f"{name}: {fresh[name]:.2f} (recorded {recorded[name]:.2f}, floor {floor:.2f})"
        lines.append(line)
        if fresh[name] < floor:
            failures.append(line)
    return lines, failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("fresh", nargs="+", help="pytest-benchmark JSON or bench_ingest.py result of the run to judge")
    ap.add_argument("--recorded", action="append",
                    help="pytest-benchmark JSON or bench_ingest.py result of the recorded figures (repeatable; "
                         "default reports/results/reassembly.json and reports/results/ingest.json)")
    ap.add_argument("--tolerance", type=float, default=0.25, help="the drop below a recorded ratio that fails")
    args = ap.parse_args(argv)
    try:
        fresh: dict[str, float] = {}
        for p in args.fresh:
            fresh.update(ratios(json.loads(Path(p).read_text())))
        recorded: dict[str, float] = {}
        for p in args.recorded or [str(HERE / "results" / "reassembly.json"), str(HERE / "results" / "ingest.json")]:
            recorded.update(ratios(json.loads(Path(p).read_text())))
    except (OSError, ValueError, KeyError) as e:
        print(f"bench_guard: cannot read the results: {e}", file=sys.stderr)
        return 2
    lines, failures = judge(fresh, recorded, args.tolerance)
    print("\n".join(lines))
    for line in failures:
        print(f"REGRESSION {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
