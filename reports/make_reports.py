"""Regenerate the benchmark and scenario reports (Markdown with PNG figures).

    .venv/bin/python reports/make_reports.py            # everything (a few minutes)
    .venv/bin/python reports/make_reports.py --quick    # smoke run: small sweeps, reuse saved numbers

Sections, each a Markdown file next to this script with its figures:

- ``reassembly.md``: reassembly + decode + XML throughput (messages/s, fragments/s) vs
  fragment size S, pipeline vs the construct baseline, from a pytest-benchmark run of
  tests/benchmarks (``results/reassembly.json``);
- ``ingest.md``: ingest throughput of the service against the bare aiohttp handler
  (``reports/bench_ingest.py`` when wrk is installed and not ``--quick``, else the last
  ``results/ingest.json``, and the report says so);
- ``simulator.md``: simulator speed (``reports/bench_devicesim.py``; ``--quick`` reuses
  ``results/bench_devicesim.json``);
- ``scenarios.md``: delivery outcome (complete / partial / incident) and record yield
  vs independent and bursty loss for EU868 DR0/DR3/DR5 through the real collector (the
  scenario runner), v1 fleets and v2 fleets in a closed loop with downlinks (adaptive
  and fixed parity, ``v2_sweep.py``), beside the theoretical curves of v1 and v2
  (``yield_report.py``, ``yield_theory.py``); airtime per delivered record against the
  erasure limit with the checked claim on the adaptive policy; the latency
  distributions of the shipped scenarios and their expectation tables;
- ``README.md``: the index, with the machine and versions, headed by the record-yield
  headline from the last full scenario run.

Every section names the machine, the versions and the command its numbers came from.

Over 400 lines on purpose: one section per report, each a run, a figure and the
Markdown around it, so a report's text sits next to the code that measured it; the
yield curves and their theory live in yield_report.py and yield_theory.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from statistics import median

import click
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
if str(HERE) not in sys.path:  # the report's sibling modules (yield_report, yield_theory)
    sys.path.insert(0, str(HERE))

#: loss-sweep points run at a time: each point is the runner and a collector process,
#: which wait on each other for much of a run, so two at a time help on two cores
JOBS = min(2, os.cpu_count() or 1)

PACKAGES = ("aiohttp", "lxml", "construct", "simpy", "numpy", "matplotlib", "pytest-benchmark")


# --------------------------------------------------------------------------- machine


def machine() -> dict:
    """Where and with what the numbers are measured."""
    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for p in PACKAGES:
        try:
            versions[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            versions[p] = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"cpus": os.cpu_count(), "cpu": cpu, "platform": platform.platform(), "python": platform.python_version(),
            "versions": versions, "commit": commit, "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")}


def machine_line(m: dict | None) -> str:
    if not m:
        return "Machine: not recorded."
    parts = [f"{m.get('cpus', '?')} CPUs"]
    if m.get("cpu"):
        parts.append(str(m["cpu"]))
    parts.append(f"Python {m.get('python', '?')}")
    if m.get("platform"):
        parts.append(str(m["platform"]))
    vers = m.get("versions") or {k: m[k] for k in ("numpy",) if k in m}
    if vers:
        parts.append(", ".join(f"{k} {v}" for k, v in vers.items() if v))
    if m.get("commit"):
        parts.append(f"commit {m['commit']}")
    if m.get("date"):
        parts.append(str(m["date"]))
    return "Measured on: " + "; ".join(parts) + "."


def md_table(head: list[str], rows: list[list]) -> str:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    out += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(out)


def _save(fig, name: str, out: Path) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


# --------------------------------------------------------------------------- reassembly


def run_reassembly_bench(out_json: Path) -> None:
    cmd = [sys.executable, "-m", "pytest", str(ROOT / "tests" / "benchmarks"), "-q", "-p", "no:cacheprovider",
           "--benchmark-enable", "--benchmark-timer=time.process_time", f"--benchmark-json={out_json}"]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=900)


def reassembly_rows(bench: dict) -> list[dict]:
    """pytest-benchmark JSON -> ``{impl, size, fragments, batch, mean_s, messages_per_s, fragments_per_s}``."""
    rows = []
    for b in bench.get("benchmarks", []):
        name = b.get("name", "")
        # the two per-size tests only (the interleaved one: reassembly_interleaved)
        impl = ("pipeline" if name.startswith("test_reassembly_pipeline[")
                else "baseline" if name.startswith("test_baseline_construct_decode[") else None)
        if impl is None:
            continue
        info = b.get("extra_info", {})
        size = info.get("size") or (b.get("params") or {}).get("size")
        # the median round: robust to the other tenants of a shared 2-core machine
        mean = b["stats"].get("median", b["stats"]["mean"])
        batch = info.get("batch", 1)
        frags = info.get("fragments", 0)
        rows.append({"impl": impl, "size": size, "fragments": frags, "batch": batch, "mean_s": mean,
                     "messages_per_s": batch / mean, "fragments_per_s": frags / mean})
    return sorted(rows, key=lambda r: (r["impl"], r["size"]))


def reassembly_interleaved(bench: dict) -> list[dict]:
    """The pipeline and the construct baseline in turn within every round (CPU time,
    median round): ``{size, pipeline, construct, ratio}``, the ratio the guard checks."""
    out = []
    for b in bench.get("benchmarks", []):
        info = b.get("extra_info") or {}
        if b.get("name", "").startswith("test_pipeline_to_construct_interleaved[") and "pipeline_to_construct" in info:
            out.append({"size": info.get("size"), "pipeline": info["pipeline_messages_per_s"],
                        "construct": info["construct_messages_per_s"], "ratio": info["pipeline_to_construct"]})
    return sorted(out, key=lambda r: r["size"])


def plot_reassembly(rows: list[dict], out: Path) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for impl, style in (("pipeline", "o-"), ("baseline", "s--")):
        rs = [r for r in rows if r["impl"] == impl]
        if not rs:
            continue
        xs = [r["size"] for r in rs]
        axes[0].plot(xs, [r["messages_per_s"] for r in rs], style, label=impl)
        axes[1].plot(xs, [r["fragments_per_s"] for r in rs], style, label=impl)
    for ax, what in zip(axes, ("messages/s", "fragments/s"), strict=True):
        ax.set_xlabel("fragment size S (bytes)")
        ax.set_ylabel(what)
        ax.set_yscale("log")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    axes[0].set_title("658-byte records reassembled, decoded, XML built")
    axes[1].set_title("fragments processed")
    return _save(fig, "reassembly_throughput.png", out)


def reassembly_section(out: Path, quick: bool, log: Callable[[str], None]) -> str:
    path = RESULTS / "reassembly.json"
    note = ""
    try:
        log("reassembly: running tests/benchmarks with --benchmark-enable")
        run_reassembly_bench(path)
    except (subprocess.SubprocessError, OSError) as e:
        if not path.exists():
            raise
        note = f"\n*The benchmark run failed ({e}); the figures use the last saved results.*\n"
    bench = json.loads(path.read_text())
    rows = reassembly_rows(bench)
    png = plot_reassembly(rows, out)
    if note:  # the saved results: say what pytest-benchmark recorded about their machine
        m = bench.get("machine_info", {})
        mach = {"cpus": (m.get("cpu") or {}).get("count"), "cpu": (m.get("cpu") or {}).get("brand_raw"),
                "python": m.get("python_version"), "platform": f"{m.get('system', '')} {m.get('release', '')}".strip(),
                "date": bench.get("datetime", "")[:16].replace("T", " ")}
    else:
        mach = machine()
    table = md_table(["implementation", "S", "fragments / batch", "messages/s", "fragments/s"],
                     [[r["impl"], r["size"], r["fragments"], f"{r['messages_per_s']:,.0f}",
                       f"{r['fragments_per_s']:,.0f}"] for r in rows])
    ratio = ""
    by = {(r["impl"], r["size"]): r for r in rows}
    sizes = sorted({r["size"] for r in rows})
    if all(("pipeline", s) in by and ("baseline", s) in by for s in sizes):
        ratio = "Pipeline / baseline: " + ", ".join(
            f"S={s}: {by[('pipeline', s)]['messages_per_s'] / by[('baseline', s)]['messages_per_s']:.1f}x"
            for s in sizes) + "."
    inter = reassembly_interleaved(bench)
    if inter:
        ratio += ("\n\nThe two in turn within every round, CPU time, median round "
                  "(`test_pipeline_to_construct_interleaved`; the ratio `tox -e bench` guards):\n\n" + md_table(
                      ["S", "pipeline messages/s", "construct messages/s", "pipeline / construct"],
                      [[r["size"], f"{r['pipeline']:,}", f"{r['construct']:,}", f"{r['ratio']:.2f}"] for r in inter]))
    return f"""# Reassembly throughput

The 658-byte record (two channels of 144 samples, all four optional blocks) in shuffled
fragments of S bytes, 50 messages per round (figures from the median of 30 rounds): reassembly, decoding and the XML document
(`collector.core.reassembly` + `collector.core.assemble`), against a baseline that collects the
fragments, joins them and parses with the construct reference declaration.
{note}
![reassembly throughput]({png})

{table}

{ratio}

Command: `pytest tests/benchmarks --benchmark-enable --benchmark-timer=time.process_time --benchmark-json=reports/results/reassembly.json`
(run by `python reports/make_reports.py`; CPU time: the machine may be shared).

{machine_line(mach)}
"""


# --------------------------------------------------------------------------- ingest


_INGEST_COLORS = {"bare": "#999999", "gate": "#bbbbbb", "collector": "#9ecae1", "collector-w2": "#1f77b4"}


def plot_ingest(data: dict, out: Path) -> str:
    levels = data["levels"]
    keys = list(data["servers"])
    names = data["servers"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    w = 0.8 / len(keys)
    x = range(len(levels))
    for k, key in enumerate(keys):
        off = [i + (k - (len(keys) - 1) / 2) * w for i in x]
        rps = [lv["servers"][key]["requests_per_s"] for lv in levels]
        bars = axes[0].bar(off, rps, w, label=names[key], color=_INGEST_COLORS.get(key))
        for b, v in zip(bars, rps, strict=True):
            axes[0].annotate(f"{v / 1000:.1f}k", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom",
                             fontsize=7)
        axes[1].bar(off, [lv["servers"][key]["latency_ms"]["p99"] for lv in levels], w,
                    color=_INGEST_COLORS.get(key))
        axes[2].bar(off, [lv["servers"][key]["server_cpu_us_per_request"] for lv in levels], w,
                    color=_INGEST_COLORS.get(key))
    labels = [f"{lv['connections']} connections" for lv in levels]
    for ax, title, unit in ((axes[0], "throughput", "requests/s"), (axes[1], "p99 latency", "ms"),
                            (axes[2], "server CPU per request (all its processes)", "µs")):
        ax.set_xticks(list(x), labels)
        ax.set_title(title)
        ax.set_ylabel(unit)
    handles, labels_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=len(keys), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(out / "ingest_throughput.png", dpi=110)
    plt.close(fig)
    return "ingest_throughput.png"


def ingest_section(out: Path, quick: bool, log: Callable[[str], None]) -> str:
    path = RESULTS / "ingest.json"
    note = ""
    if not quick and shutil.which("wrk"):
        log("ingest: running reports/bench_ingest.py (wrk)")
        try:
            subprocess.run([sys.executable, str(HERE / "bench_ingest.py")],
                           cwd=ROOT, check=True, capture_output=True, timeout=1800)
            note = "Measured in this run (`python reports/bench_ingest.py`)."
        except (subprocess.SubprocessError, OSError) as e:
            note = f"*The ingest benchmark failed in this run ({e}); these are the last saved results.*"
    else:
        why = "--quick" if quick else "wrk is not installed (`apt-get install -y wrk`)"
        note = f"*Not measured in this run ({why}): these are the last results saved in `results/ingest.json`.*"
    data = json.loads(path.read_text()) if path.exists() else {}
    if "levels" not in data:
        return "# Ingest throughput\n\nNo results yet: run `python reports/bench_ingest.py` (needs wrk).\n"
    png = plot_ingest(data, out)
    rows = []
    for lv in data["levels"]:
        for key, d in lv["servers"].items():
            ratio = lv["ratio"].get(key)
            cpu_ratio = (lv.get("cpu_ratio") or {}).get(key)
            cpu_runs = (lv.get("cpu_ratio_per_run") or {}).get(key) or []
            lat = d["latency_ms"]
            rows.append([lv["connections"], data["servers"][key], f"{d['requests_per_s']:,.0f}",
                         f"{d['requests_per_s_min']:,.0f}–{d['requests_per_s_max']:,.0f}",
                         "baseline" if ratio is None else f"**{ratio:.2f}**", lat["p50"], lat["p99"],
                         f"{d['server_cpu_us_per_request']:.0f}",
                         "baseline" if key == "bare" else "–" if cpu_ratio is None else
                         f"**{cpu_ratio:.2f}** ({min(cpu_runs):.2f}–{max(cpu_runs):.2f})" if cpu_runs
                         else f"**{cpu_ratio:.2f}**"])
    params = data.get("parameters", {})
    target = data.get("target_ratio", 0.6)
    best = max(((lv["ratio"].get("collector-w2", lv["ratio"].get("collector", 0)), lv["connections"])
                for lv in data["levels"]), default=(0, 0))
    wrk_cpu = median([lv["servers"]["bare"]["wrk_cpu_us_per_request"] for lv in data["levels"]])
    bare_cpu = median([lv["servers"]["bare"]["server_cpu_us_per_request"] for lv in data["levels"]])
    coll_cpu = median([lv["servers"][k]["server_cpu_us_per_request"] for lv in data["levels"]
                       for k in ("collector", "collector-w2") if k in lv["servers"]])
    cpus = (data.get("machine") or {}).get("cpus") or 2
    cpu_target = data.get("target_cpu_ratio", 2.0)
    cpu_meds = {k: median([r for lv in data["levels"] for r in (lv.get("cpu_ratio_per_run") or {}).get(k, [])])
                for k in ("collector", "collector-w2")
                if any((lv.get("cpu_ratio_per_run") or {}).get(k) for lv in data["levels"])}
    cpu_line = ("CPU per acknowledged uplink over the bare handler's CPU per request (the median of every run, "
                "each beside the bare handler's run of the same round): "
                + ", ".join(f"{data['servers'][k]} **{v:.2f}**" for k, v in cpu_meds.items())
                + f" (target <= {cpu_target}; `reports/bench_guard.py` guards it)." if cpu_meds else "")
    gate = [lv["ratio"]["gate"] for lv in data["levels"] if "gate" in lv["ratio"]]
    gate_ratio = ("(not measured)" if not gate else f"{gate[0]:.2f}" if f"{min(gate):.2f}" == f"{max(gate):.2f}"
                  else f"{min(gate):.2f}–{max(gate):.2f}")
    return f"""# Ingest throughput

Every server runs as its own process (tree) under the same wrk load (The Things Stack
webhook bodies, HTTP/1.1 keep-alive, {params.get('duration_s', '?')} s per run,
{params.get('repeat', '?')} alternating runs per server and connection count; medians,
with the range of the runs). The **collector** parses and validates the body,
reassembles, commits the fragment and the message state to SQLite (WAL,
`synchronous=FULL`, group commit) and answers 202 only after the commit; messages that
complete during the run are assembled into documents, as in production. The **bare
aiohttp handler** only parses the JSON and answers 202. The figure of merit is the
collector's CPU per acknowledged uplink over the bare handler's CPU per request, run
beside it (target <= {cpu_target}); requests/s against the bare handler's are reported
beside it (the earlier target, >= {target} of its requests/s, measured the shared
machine as much as the code). The **ingest checks only** server runs the
collector's token, body and content checks and the full parse, without reassembly or
store: the share of the gap that parsing alone explains.
{note}

![ingest throughput]({png})

{md_table(["connections", "server", "requests/s", "range", "/ bare", "p50 ms", "p99 ms", "CPU µs/request",
           "CPU / bare (runs)"], rows)}

Best collector / bare (requests/s): **{best[0]:.2f}** at {best[1]} connections.
{cpu_line}
Latencies are the median over the runs of each run's percentile; a pause of the
(shared, virtual) machine shows in every server's p99 alike, so read a collector's
p99 against the bare handler's in the same table.

**Where the gap comes from.** On this {cpus}-CPU machine wrk itself takes about
{wrk_cpu:.0f} µs of CPU per request, the bare handler about {bare_cpu:.0f} µs, and the
collector about {coll_cpu:.0f} µs over all its processes (HTTP workers, the owner with
its store thread, the assembly worker). The collector's throughput is bounded by its
CPU per request more than by the disk: group commit puts many uplinks in each `fsync`
(at few connections the commit round trip also limits how many wait for each one). With
`--workers` the HTTP handling and parsing spread over the cores, so the collector can
use more than one core where the bare handler (one process) uses one; with more cores
than this machine has they should go further (not measured here).

**Why the throughput ratio stays low here.** The collector's ingest checks and parse alone,
with no reassembly and no store, reach {gate_ratio} of the bare handler in one process.
Everything else the collector must do for an uplink (reassembly, the durable commit, the
document for every completed message) comes on top, and on {cpus} CPUs shared with the
load generator, spreading the work over processes buys at most the second core, less
what the load generator takes and what handing uplinks between processes costs.

Command: `{data.get('command', 'python reports/bench_ingest.py').strip()}`.

{machine_line(data.get("machine"))}
{_ingest_cost()}"""


def _ingest_cost() -> str:
    """The CPU-per-uplink study (``ingest_cost.md``, measured by hand with a profiler),
    kept at the end of ``ingest.md``."""
    path = HERE / "ingest_cost.md"
    return "\n" + path.read_text() if path.exists() else ""


# --------------------------------------------------------------------------- simulator


def plot_simulator(data: dict, out: Path) -> str:
    res = data["results"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    labels = [f"{r['workload']}\n{r['devices']:,} dev" for r in res]
    ups = [r["uplinks_per_s"] for r in res]
    bars = axes[0].bar(labels, ups, color=["#1f77b4" if r["workload"] == "lorasim" else "#ff7f0e" for r in res])
    for bar, v in zip(bars, ups, strict=True):
        axes[0].annotate(f"{v:,.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("simulated uplinks per wall second")
    axes[0].set_title("simulator speed")
    dd = [(f"{r['workload']}\n{r['devices']:,} dev", r["devices"] * r["hours"] / 24 / r["wall_s"]) for r in res]
    bars = axes[1].bar([a for a, _ in dd], [b for _, b in dd], color="#2ca02c")
    for bar, (_, v) in zip(bars, dd, strict=True):
        axes[1].annotate(f"{v:,.0f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    axes[1].set_yscale("log")
    axes[1].set_ylabel("device-days per wall second")
    axes[1].set_title("device-days simulated per second")
    return _save(fig, "simulator_speed.png", out)


def simulator_section(out: Path, quick: bool, log: Callable[[str], None]) -> str:
    path = RESULTS / "bench_devicesim.json"
    if quick:
        note = "*Not measured in this run (--quick): the last results saved in `results/bench_devicesim.json`.*"
    else:
        log("simulator: running reports/bench_devicesim.py")
        try:
            subprocess.run([sys.executable, str(HERE / "bench_devicesim.py")], cwd=ROOT, check=True,
                           capture_output=True, timeout=1200)
            note = "Measured in this run (`python reports/bench_devicesim.py`)."
        except (subprocess.SubprocessError, OSError) as e:
            note = f"*The simulator benchmark failed in this run ({e}); these are the last saved results.*"
    if not path.exists():
        return "# Simulator speed\n\nNo results yet: run `python reports/bench_devicesim.py`.\n"
    data = json.loads(path.read_text())
    png = plot_simulator(data, out)
    rows = []
    for r in data["results"]:
        rows.append([r["workload"], f"{r['devices']:,}", r["hours"], f"{r['uplinks']:,}", r["wall_s"],
                     f"{r['uplinks_per_s']:,.0f}", f"{r['devices'] * r['hours'] / 24 / r['wall_s']:,.0f}",
                     r.get("der", "-")])
    by = {r["workload"]: r for r in data["results"]}
    ratios = [f"`lorasim` at {r['devices']:,} devices ran {r['speedup']}x as many uplinks per second as "
              "`baseline`" for r in data["results"] if r["workload"] == "baseline" and "speedup" in r]
    loop = by.get("fleet-v1-loop", {}).get("loop_cost")
    v2 = by.get("fleet-v2", {})
    figures = "; ".join(ratios)
    if loop:
        figures += f"; the closed loop took {loop}x the staged engine's wall time on the v1 fleet"
    if v2:
        figures += (f"; the v2 fleet with downlinks took {v2['wall_s']} s ({v2.get('vs_fleet_v1')}x the v1 fleet), "
                    f"{v2.get('downlinks_sent', 0):,} downlinks, {v2.get('uplinks_deaf', 0):,} uplink receptions "
                    f"lost to half-duplex gateways, creation to rebuild median {v2.get('rebuild_median_s')} s")
    mach = data.get("machine") or {}
    load = mach.get("load_average")
    if load and load[0] > (mach.get("cpus") or 1):
        figures += (f". The machine's load average was {load[0]} on {mach.get('cpus')} CPUs during this run "
                    "(other jobs): read the ratios, measured side by side, rather than the wall times")
    return f"""# Simulator speed

`lorasim`: the LoRaSim radio workload (N devices, SF12, 20-byte frames, Poisson with a
mean interval of 1000 s, 24 h, one channel, collisions with capture, radio only) on the
staged engine. `baseline`: the same workload through the algorithm of LoRaSim 0.2.1's
`loraDir.py` (Bor et al., MSWiM 2016: one SimPy process per node, each packet checked
against the list of packets at the base station), re-created in
`reports/lorasim_baseline.py` and run in the same process, so the ratio is measured on
the same machine under the same load. The two count delivery differently, as each
simulator does: LoRaSim's DER is (sent - collisions) / sent, a packet below the
receiver's sensitivity still counting as delivered; ours is heard by at least one
gateway / sent (below sensitivity counts as lost), which is why `lorasim`'s DER is lower
in the sparse cells. `fleet-v1`: 10,000 EU868 devices for 24 h, ADR, one 658-byte record
a day each, duty cycle, the full network-server model and the trace written, staged
engine; `fleet-v1-loop`: the same through the closed loop (what the loop costs where
no feedback is needed); `fleet-v2`: the same fleet on wire format v2 (parity 2, polls,
repair rounds) with Class A downlinks (RX1 1 s / RX2), gateway duty cycle and
half-duplex, and the collector's repair core in-process, through the closed loop. One
process. {note}

In this run: {figures}.

![simulator speed]({png})

{md_table(["workload", "devices", "hours", "uplinks", "wall s", "uplinks/s", "device-days/s", "DER"], rows)}

Command: `{data.get('command', 'python reports/bench_devicesim.py')}`.

{machine_line(data.get("machine"))}
"""


# --------------------------------------------------------------------------- scenarios


def loss_scenario(dr: int, p: float, quick: bool, model: str = "independent") -> dict:
    """A small EU868 fleet at one DR with loss ``p`` (TOML form), independent (Bernoulli)
    or ``bursty`` (Gilbert-Elliott of the same mean): every device sends one 658-byte
    record between 30 and 90 minutes into the run, and the run lasts long enough for the
    slowest (an hour at DR0 under the duty cycle) to be sent whole."""
    from yield_report import gilbert_channel

    channel = {"model": "bernoulli", "p": p} if model == "independent" else gilbert_channel(p)
    return {
        "name": f"loss-dr{dr}-p{int(round(p * 100))}{'-bursty' if model == 'bursty' else ''}", "seed": 100 + dr,
        "hours": 3 if dr <= 2 else 2,
        "devicesim": {"region": "EU868", "format": "ttn", "start": "2026-11-23T23:00:00Z",
                      "devices": {"count": 16 if quick else 60, "radius_m": 200, "dr": {"kind": "fixed", "dr": dr},
                                  "schedule": {"kind": "daily", "hour": 0, "jitter_min": 30}},
                      "channel": channel},
        "run": {"max_step_s": 120},
        # the ratios below are n/a in a run with no document, no partial document or
        # no incident (no loss, or so much that no record arrived whole), and an
        # expectation on n/a fails: sweep_passed checks them where they apply
        "expect": {"unexpected_documents": "== 0", "duplicate_deliveries": "== 0"},
    }


#: measurements that must be 1.0 when the run had a case to measure, and are n/a otherwise
WHEN_MEASURED = ("delivered_ratio", "complete_documents_exact", "partial_documents_exact",
                 "incidents_for_lost_required")


def sweep_passed(passed: bool, values: dict) -> bool:
    """A sweep point passed: its expectations, and every WHEN_MEASURED value 1.0 or n/a."""
    return passed and all(values.get(k) in (None, 1.0) for k in WHEN_MEASURED)


def outcome_fractions(values: dict) -> dict:
    """Complete / partial / no-document fractions of the records that reached the collector."""
    n = values.get("records_reached") or 0
    if not n:
        return {"complete": 0.0, "partial": 0.0, "incident": 0.0, "n": 0}
    return {"complete": values["documents_complete"] / n, "partial": values["documents_partial"] / n,
            "incident": (n - values["documents"]) / n, "n": n}


def run_loss_sweep(drs: list[int], losses: list[float], quick: bool, log: Callable[[str], None],
                   models: tuple[str, ...] = ("independent",), jobs: int = 1) -> list[dict]:
    import v2_sweep

    from collector.core.lorawan import region
    from collector.core.wire import fragment_count

    pts = [(dr, model, p) for dr in drs for model in models for p in losses]
    results = v2_sweep.run_points([loss_scenario(dr, p, quick, model) for dr, model, p in pts], jobs, log)
    rows = []
    for (dr, model, p), res in zip(pts, results, strict=True):
        n_frag = fragment_count(658, region("EU868").dr(dr).max_payload)
        v = res["values"]
        rows.append({"dr": dr, "loss": p, "model": model, "fragments": n_frag,
                     "passed": sweep_passed(res["passed"], v),
                     **outcome_fractions(v), "records": v["records"], "yield": v["record_yield"],
                     "frames_per_delivered": v["frames_per_delivered_record"],
                     "airtime_per_record_s": v["airtime_per_record_s"],
                     "airtime_per_delivered_record_s": v["airtime_per_delivered_record_s"],
                     "wall_s": res["wall_s"]})
    return rows


def plot_loss(rows: list[dict], out: Path) -> str:
    drs = sorted({r["dr"] for r in rows})
    fig, axes = plt.subplots(1, len(drs), figsize=(4.2 * len(drs), 4), sharey=True, squeeze=False)
    for ax, dr in zip(axes[0], drs, strict=True):
        rs = sorted((r for r in rows if r["dr"] == dr and r.get("model", "independent") == "independent"),
                    key=lambda r: r["loss"])
        xs = [100 * r["loss"] for r in rs]
        ax.plot(xs, [r["complete"] for r in rs], "o-", color="#2ca02c", label="complete")
        ax.plot(xs, [r["partial"] for r in rs], "s-", color="#ff7f0e", label="partial")
        ax.plot(xs, [r["incident"] for r in rs], "^-", color="#d62728", label="incident (no document)")
        n = rs[0]["fragments"]
        ax.plot(xs, [(1 - r["loss"]) ** n for r in rs], ":", color="#2ca02c", label="(1-p)^n")
        ax.set_title(f"EU868 DR{dr}: {n} fragments per record")
        ax.set_xlabel("independent uplink loss (%)")
        ax.grid(True, alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
    axes[0][0].set_ylabel("fraction of records reaching the collector")
    axes[0][-1].legend(loc="center left", fontsize=8)
    return _save(fig, "outcome_vs_loss.png", out)


def sizes_of(drs: list[int]) -> dict[int, int]:
    from collector.core.lorawan import region

    return {dr: region("EU868").dr(dr).max_payload for dr in drs}


def _pct(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2%}"


def check_text(check: dict) -> str:
    """The checked result of the adaptive policy against the limit, as Markdown."""
    pts = []
    for pt in check["points"]:
        if not pt["measured"]:
            pts.append(f"{100 * pt['loss']:.0f} %: not measured")
            continue
        pts.append(f"{100 * pt['loss']:.0f} %: {pt['airtime_per_delivered_record_s']:.1f} s against "
                   f"{pt['limit_airtime_s']:.1f} s, **{pt['over_limit']:.3f} x** the limit "
                   f"({'within' if pt['within_margin'] else 'NOT within'} {100 * check['margin']:.0f} %), yield "
                   f"{_pct(pt.get('yield_followed'))} over the records followed by another "
                   f"({'>=' if pt['yield_ok'] else 'BELOW'} {100 * check['min_yield']:.1f} %), "
                   f"{pt['yield']:.2%} over all {pt['records']} records (95 % lower bound "
                   f"{pt['yield_lower_95']:.2%})")
    word = {"pass": "PASS", "fail": "FAIL", "n/a": "n/a (a point was not measured)"}[check["result"]]
    return (f"**Checked: {check['claim']}: {word}.**\n\n" + "\n".join(f"- {x}" for x in pts) + "\n")


def yield_section(sweep: list[dict], drs: list[int], out: Path, v2: list[dict] | None = None,
                  check: dict | None = None) -> str:
    import v2_sweep
    import yield_report as yr

    v2 = v2 or []
    check = check or v2_sweep.limit_check(v2)
    sizes = sizes_of(drs)
    fig1 = yr.plot_yield_vs_loss(sweep, sizes, out, _save, v2)
    fig2 = yr.plot_yield_vs_airtime(sweep, sizes, 0, out, _save, v2)
    fig3 = yr.plot_frames_vs_limit(sweep, sizes, 0, out, _save, v2)
    head, rows = yr.yield_table(sweep, sizes)
    head2, rows2 = yr.v2_table(v2)
    t0 = v2_sweep.frame_airtime_s(0)
    n_checked = sorted({pt["records"] for pt in check["points"] if pt["measured"]})
    return f"""## Record yield: v1 against v2

The same sweep, read as what users care about: the **record yield**, records whose
exact complete document reached the Web App / records the devices generated. The
loss is independent (Bernoulli) or bursty (Gilbert-Elliott, leaving the bad state
with probability {yr.P_BG}, so bursts of ~{1 / yr.P_BG:.1f} frames, at the same mean).
Red: wire format v1 (a record needs all n fragments), measured through the real
collector, beside its theory, (1-p)^n for independent loss and the exact
Gilbert-Elliott probability for bursts. Blue lines: v2 without any repair round
(wire-format-v2.md: k = ceil(658 / (S - 4)) data chunks and r parity rows, any k of
the k + r frames rebuild the record: the binomial tail P(Bin(k+r, 1-p) >= k), and its
Gilbert-Elliott counterpart). Blue squares: v2 **measured** through the real
collector in a closed loop with Class A downlinks: devices with the adaptive parity
policy (starting at r = 2, the collector steering r with REDUNDANCY), polls, ACK and
NEED rounds, two gateways with downlink duty cycle and half-duplex, the same loss on
downlinks as on uplinks, The Things Stack's downlink timing (RX1 5 s; an answer the
collector queues within about 3 s goes out in the windows of the uplink it answers;
the sweep's settings are `v2_scenario` in `reports/v2_sweep.py`). The measured v2 points sit above the no-repair curves: that is
what the repair rounds buy. Bursts hurt v1 less than independent loss of the same mean
(the losses bunch up in fewer records) and fixed parity more. v2 at 0 % loss is not
swept (nothing to repair: every record is whole after its k data frames).

![yield vs loss]({fig1})

Yield against the uplink airtime it costs at DR0 per generated record (data, parity
and repair rows, polls), at 10 % and 20 % loss: v2 with r = 0..4 parity rows, without
repair (theory, every frame of S = {sizes[0]} bytes, {t0:.2f} s) and through the
collector with repair rounds (measured), v2 adaptive (star) and v1 (square), both
measured.

![yield vs airtime]({fig2})

### Airtime per delivered record against the limit

No scheme delivers k chunks over a channel that loses a share p of frames with fewer
than k / (1 - p) frames on average. The comparison is in **airtime (seconds)**, the limit
being k / (1 - p) x the airtime of one S-byte frame ({t0:.2f} s at DR0, k = 14): every v2
data, parity and repair frame carries S bytes, but a poll is a shorter frame (so a
count of frames would charge a poll as much as a data frame), and v1's last fragment
is shorter too. Polls count as uplink airtime. v1 pays its n fragments' airtime /
(1-p)^n; fixed parity without repair pays (k + r) frames / P(at least k of k + r);
with repair rounds a device stops when the collector's ACK arrives, so it pays about the
frames until k arrived, plus the polls and the frames sent before a lost ACK.

![airtime vs limit]({fig3})

{check_text(check)}
How much a measured yield supports: the checked points have {", ".join(str(x) for x in n_checked) or "no"}
records each; a point with none lost in N records supports a yield of at least about 1 - 3/N
at 95 % confidence (the "95 % lower bound" column, one-sided Clopper-Pearson), so
yield >= 99.9 % is what was measured in these runs, not a bound they prove: that would
take about 3,000 records without a loss per point.

{md_table(head2, rows2) if rows2 else "No v2 point was measured in this run."}

"lost" splits the records not yielded by the first stage that lost what they needed
(docs/scenarios.md): the device gave up (its repair rounds were spent), the radio (fewer
than k of its frames heard), or "other" (everything reached the collector). A device's
last record in a run has no later uplink to bring a repeated NEED, so a finite run
loses some records a device in continuous operation would repair (docs/scenarios.md,
"The end of a v2 run"): "yield (followed)" is the yield over the records their device
followed with another in the run, the steady state the checked claim uses (the plain
yield is shown beside it). "uplinks deaf": uplink receptions a gateway missed while it
transmitted a downlink (half-duplex): loss on top of p (the other gateway may still
hear the frame), which the limit at the nominal p does not allow for. "expectations":
the run's own checks (exact documents, no duplicate or unexpected document, no ingest
error, nothing left open); a failure is named.

### v1 against theory

{md_table(head, rows)}
"""


def plot_latency(results: list[dict], out: Path) -> str:
    """Empirical CDFs of the collector-to-Web-App latency per scenario (symlog x);
    scenarios that delivered every document at once are named in a note instead."""
    fig, ax = plt.subplots(figsize=(10, 5))
    colors = plt.get_cmap("tab10").colors
    styles = ["-", "--", "-.", ":"]
    at_once = []
    k = 0
    for r in results:
        lat = sorted(r.get("details", {}).get("latencies_s", []))
        if not lat:
            continue
        if lat[-1] <= 1.0:
            at_once.append(r["name"])
            continue
        ys = [(i + 1) / len(lat) for i in range(len(lat))]
        ax.step(lat, ys, where="post", color=colors[k % len(colors)], linestyle=styles[(k // len(colors)) % 4],
                linewidth=1.6, label=f"{r['name']} (n={len(lat)})")
        k += 1
    ax.set_xscale("symlog", linthresh=1.0)
    ax.set_xlim(left=0)
    ax.set_xlabel("Web App store time - last fragment's arrival (virtual s)")
    ax.set_ylabel("fraction of documents")
    ax.set_title("delivery latency per scenario (empirical CDF)")
    ax.grid(True, which="both", alpha=0.3)
    if k:
        ax.legend(fontsize=8, loc="lower right")
    if at_once:
        names = ", ".join(at_once)
        half = len(at_once) // 2
        if len(names) > 110:
            names = ", ".join(at_once[:half]) + ",\n" + ", ".join(at_once[half:])
        fig.text(0.01, 0.01, "every document at 0 s: " + names, fontsize=8, va="bottom")
        fig.tight_layout(rect=(0, 0.07, 1, 1))
        fig.savefig(out / "latency_cdf.png", dpi=110)
        plt.close(fig)
        return "latency_cdf.png"
    return _save(fig, "latency_cdf.png", out)


def run_shipped(quick: bool, log: Callable[[str], None]) -> tuple[list[dict], float]:
    from scenarios.runner import run_scenario
    from scenarios.spec import load_scenario, shipped_files

    files = shipped_files()
    if quick:
        files = [p for p in files if p.stem in ("quickstart", "loss_20pct", "webapp_outage")]
    out = []
    t0 = time.monotonic()
    for p in files:
        log(f"scenario: {p.stem}")
        d = run_scenario(load_scenario(p)).to_dict()
        d["path"] = p.resolve().relative_to(ROOT).as_posix()  # the report names files in the repository
        out.append(d)
    return out, time.monotonic() - t0


def _v(x) -> str:
    if x is None:
        return "-"
    if isinstance(x, float):
        return f"{x:.3f}" if abs(x) < 100 else f"{x:.0f}"
    return str(x)


def scenarios_section(out: Path, quick: bool, log: Callable[[str], None]) -> str:
    drs = [0, 5] if quick else [0, 3, 5]
    losses = [0.0, 0.2, 0.4] if quick else [0.0, 0.1, 0.2, 0.3, 0.4]
    import v2_sweep

    t_sweep = time.monotonic()
    sweep = run_loss_sweep(drs, losses, quick, log, ("independent", "bursty"), jobs=JOBS)
    v2 = v2_sweep.run_sweep(quick, JOBS, log)
    sweep_wall = time.monotonic() - t_sweep
    check = v2_sweep.limit_check(v2)
    shipped, wall = run_shipped(quick, log)
    data = {"machine": machine(), "quick": quick, "loss_sweep": sweep, "v2_sweep": v2, "limit_check": check,
            "sweep_wall_s": round(sweep_wall, 1), "sweep_jobs": JOBS, "scenarios": shipped,
            "scenarios_wall_s": round(wall, 1)}
    (RESULTS / ("scenarios-quick.json" if quick else "scenarios.json")).write_text(
        json.dumps(data, indent=1) + "\n", encoding="utf-8")
    return render_scenarios(data, out)


def render_scenarios(data: dict, out: Path) -> str:
    """scenarios.md and its figures from the saved results (``results/scenarios.json``)."""
    import v2_sweep

    quick, sweep, shipped = data["quick"], data["loss_sweep"], data["scenarios"]
    v2 = data.get("v2_sweep", [])
    check = v2_sweep.limit_check(v2)
    drs = sorted({r["dr"] for r in sweep})
    wall, sweep_wall, jobs = data["scenarios_wall_s"], data.get("sweep_wall_s", 0.0), data.get("sweep_jobs", 1)
    loss_png = plot_loss(sweep, out)
    lat_png = plot_latency(shipped, out)
    yield_md = yield_section(sweep, drs, out, v2, check)
    sweep_rows = [[f"DR{r['dr']}", r["fragments"], f"{100 * r['loss']:.0f} %", r["n"], f"{r['complete']:.3f}",
                   f"{r['partial']:.3f}", f"{r['incident']:.3f}", "pass" if r["passed"] else "FAIL"]
                  for r in sweep if r.get("model", "independent") == "independent"]
    scen_rows = []
    for s in shipped:
        v = s["values"]
        scen_rows.append([s["name"], "pass" if s["passed"] else "FAIL", v["records"], _v(v.get("record_yield")),
                          v["records_reached"], v["uplinks"],
                          v["documents_complete"], v["documents_partial"], v["incidents"],
                          _v(v["latency_p50_s"]), _v(v["latency_p95_s"]), _v(v["latency_max_s"]),
                          f"{s['timings']['total_s']:.1f}"])
    failed = [f"{s['name']}: " + ", ".join(f"{e['name']}={_v(e['value'])} (limit {e['op']} {e['limit']:g})"
                                           for e in s["expectations"] if not e["passed"])
              for s in shipped if not s["passed"]]
    scope = "the quick subset" if quick else "every shipped scenario"
    return f"""# Scenarios: delivery outcome and latency

Measured through the real collector (its own process, SQLite, HTTP) and the stand-in
Web App in virtual time, by the scenario runner (docs/scenarios.md).

## Outcome vs loss rate

Small EU868 fleets ({'16' if quick else '60'} devices, one 658-byte record each, sent
whole within the run; at DR0 a message takes about an hour under the duty cycle) with
independent (Bernoulli) uplink loss. Fractions of the records that reached the
collector: complete documents, partial documents (the required section arrived, an
optional block did not) and incidents (required bytes lost: no document). With this
record the required section fills all fragments but the last at DR0 and all three at
DR5, so a partial document needs exactly the last fragment lost (DR0) or cannot occur
(DR5). The dotted line is (1-p)^n, the probability that all n fragments arrive. Each
point also checks the run's expectations (exact documents, an incident for every lost
required section): the last column. At high loss on DR0 a record that lost fragment 0
and then several fragments in a row can give two incidents: without fragment 0 the
adaptive deadline only knows the highest index held, so it closes before the next
surviving fragment arrives (nothing is lost; both incidents keep their fragments).

![outcome vs loss]({loss_png})

{md_table(["DR", "fragments", "loss", "records", "complete", "partial", "incident", "expectations"], sweep_rows)}

{yield_md}

## Latency

Per document: the virtual time the Web App stored it minus the virtual time the last
fragment of its record that the collector acknowledged arrived. Complete messages are
delivered at once (0 s); partial ones wait for the deadline (15 min, longer for slow
data rates); an unavailable Web App adds its outage and the retry backoff.

![latency CDF]({lat_png})

## The scenarios ({scope})

{md_table(["scenario", "result", "records", "yield", "reached", "uplinks", "complete", "partial", "incidents",
           "latency p50 s",
           "p95 s", "max s", "wall s"], scen_rows)}

{"All expectations held." if not failed else "Failed expectations:" + chr(10) + chr(10).join("- " + f for f in failed)}
Wall time for these scenarios: {wall:.0f} s (`scenarios run scenarios/files/*.toml`).
Wall time of the v1 and v2 loss sweeps: {sweep_wall:.0f} s, {jobs} point(s) at a time.
Raw results: `reports/results/{'scenarios-quick.json' if quick else 'scenarios.json'}` (the v2 points
under `v2_sweep`, the checked result under `limit_check`).

{machine_line(data["machine"])}
"""


# --------------------------------------------------------------------------- main


SECTIONS: dict[str, tuple[str, Callable[[Path, bool, Callable[[str], None]], str]]] = {
    "reassembly": ("Reassembly throughput vs fragment size", reassembly_section),
    "ingest": ("Ingest throughput vs a bare aiohttp handler", ingest_section),
    "simulator": ("Simulator speed", simulator_section),
    "scenarios": ("Delivery outcome vs loss, latency, scenario results", scenarios_section),
}


def headline_text() -> str:
    """The record-yield headline from the last saved scenario results ('' when none)."""
    import yield_report as yr

    path = RESULTS / "scenarios.json"
    if not path.exists():
        return ""
    saved = json.loads(path.read_text(encoding="utf-8"))
    sweep = saved.get("loss_sweep", [])
    if not any("yield" in r for r in sweep) or not any(r["dr"] == 0 for r in sweep):
        return ""
    return yr.headline(sweep, sizes_of(sorted({r["dr"] for r in sweep})), files=saved.get("scenarios", []),
                       v2=saved.get("v2_sweep")) + "\n"


def index(done: dict[str, float], quick: bool) -> str:
    m = machine()
    times_path = RESULTS / "report_times.json"
    saved = json.loads(times_path.read_text(encoding="utf-8")) if times_path.exists() else {}
    saved.update({k: round(v, 1) for k, v in done.items()})
    times_path.write_text(json.dumps(saved, indent=1) + "\n", encoding="utf-8")
    rows = [[f"[{title}]({name}.md)", f"{saved[name]:.0f} s"] for name, (title, _) in SECTIONS.items()
            if name in saved]
    if (HERE / "repair_policy.md").exists():  # made by its own script, listed here too
        rows.append(["[The repair loop and the redundancy policy, closed loop](repair_policy.md) "
                     "(`python reports/repair_policy.py`, not part of `make_reports.py`)", "15 s"])
    return f"""# Reports

{headline_text()}
Regenerated by `python reports/make_reports.py{' --quick' if quick else ''}` (each report says where its numbers
come from; `--quick` reuses the saved ingest and simulator numbers and runs smaller sweeps).

{md_table(["report", "generation time"], rows)}

{machine_line(m)}
"""


@click.command()
@click.option("--quick", is_flag=True, help="Smoke run: small sweeps; reuse the saved ingest and simulator results.")
@click.option("--only", type=click.Choice(list(SECTIONS)), multiple=True, help="Regenerate only these sections.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=HERE, show_default=True,
              help="Directory for the Markdown files and figures.")
@click.option("--jobs", type=click.IntRange(1, 8), default=JOBS, show_default=True,
              help="Loss-sweep points run at a time (worker processes); the results do not depend on it.")
def main(quick: bool, only: tuple[str, ...], out: Path, jobs: int) -> None:
    """Regenerate reports/*.md and their PNG figures."""
    global JOBS
    JOBS = jobs
    out.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    t_all = time.monotonic()

    def log(msg: str) -> None:
        click.echo(f"[{time.monotonic() - t_all:6.1f}s] {msg}", err=True)

    done: dict[str, float] = {}
    for name, (_title, fn) in SECTIONS.items():
        if only and name not in only:
            continue
        t0 = time.monotonic()
        text = fn(out, quick, log)
        (out / f"{name}.md").write_text(text, encoding="utf-8")
        done[name] = time.monotonic() - t0
        log(f"wrote {name}.md ({done[name]:.0f} s)")
    (out / "README.md").write_text(index(done, quick), encoding="utf-8")
    log("done")


if __name__ == "__main__":
    main()
