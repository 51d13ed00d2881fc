"""Instructions per message of the reassembly benchmark's workloads, counted by
valgrind's cachegrind: on a busy shared machine, where CPU times of the same code move
by tens of per cent, two counts of the same code differ by about 3 % (memory layout
still varies from run to run), so a change of 5 % or more shows.

The S=51 workload of ``tests/benchmarks/test_bench_reassembly.py`` (50 messages of 14
fragments) is run once to warm up, then ``--rounds`` times; the same with no round
is subtracted, so imports and set-up drop out. Usage::

    python reports/reassembly_instructions.py [--which pipeline|baseline] [--rounds 5] [--size 51]

Needs ``valgrind`` on the PATH. Instructions are not time (lxml's allocations, for
one, cost more time per instruction than the interpreter loop): read them beside the
CPU-time benchmark, not instead of it.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _bench():
    sys.path.insert(0, str(ROOT / "tests" / "benchmarks"))
    import test_bench_reassembly

    return test_bench_reassembly


def _run_rounds(which: str, rounds: int, size: int) -> None:
    bench = _bench()
    run = bench.run_pipeline if which == "pipeline" else bench.run_baseline
    ups = bench._workload(size)
    run(ups)
    for _ in range(rounds):
        assert run(ups) == bench.BATCH


def _instructions(which: str, rounds: int, size: int) -> int:
    cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
           sys.executable, __file__, "--inner", "--which", which, "--rounds", str(rounds), "--size", str(size)]
    # one hash seed for every run: one source of run-to-run variation fewer
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, check=True).stderr
    m = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if m is None:
        raise RuntimeError("valgrind printed no instruction count")
    return int(m.group(1).replace(",", ""))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--which", choices=("pipeline", "baseline"), default="pipeline")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--size", type=int, default=51)
    ap.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.inner:
        _run_rounds(args.which, args.rounds, args.size)
        return 0
    if shutil.which("valgrind") is None:
        print("reassembly_instructions: valgrind is not installed", file=sys.stderr)
        return 2
    if args.rounds < 1:
        print("reassembly_instructions: --rounds must be at least 1", file=sys.stderr)
        return 2
    try:
        base = _instructions(args.which, 0, args.size)
        total = _instructions(args.which, args.rounds, args.size)
    except (subprocess.CalledProcessError, RuntimeError) as e:
        print(f"reassembly_instructions: {e}", file=sys.stderr)
        return 1
    batch = _bench().BATCH
    print(f"{args.which} S={args.size}: {(total - base) / (args.rounds * batch):,.0f} instructions/message "
          f"({args.rounds} rounds of {batch} messages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
