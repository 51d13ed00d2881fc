"""The record-yield part of reports/scenarios.md and the headline of reports/README.md:
measured v1 points from the loss sweep beside the theoretical curves of
:mod:`yield_theory` for v1 and for v2 without repair (wire-format-v2.md: chunks of
S - 4 bytes, so k = ceil(658 / (S - 4)); any k of k + r frames rebuild the record).

The sweep rows are made by make_reports.run_loss_sweep; this module only plots and
writes (it runs nothing).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import yield_theory as th  # noqa: E402
from v2_sweep import ADAPTIVE, frame_airtime_s, v2_k  # noqa: E402

#: the Gilbert-Elliott chains of the bursty sweep leave the bad state with this
#: probability (mean burst ~3.3 frames) and enter it so that the mean loss is p
P_BG = 0.3
PARITY = (0, 1, 2, 3, 4)


def gilbert_channel(p: float) -> dict:
    """A Gilbert-Elliott channel table (simulator form) of mean loss ``p``."""
    p_gb = p * P_BG / (1 - p) if p < 1 else 1.0
    return {"model": "gilbert", "p_gb": min(1.0, p_gb), "p_bg": P_BG, "loss_good": 0.0, "loss_bad": 1.0}


def _theory_v1(n: int, p: float, model: str) -> float:
    if model == "bursty":
        ch = gilbert_channel(p)
        return th.gilbert_at_least(n, n, ch["p_gb"], ch["p_bg"]) if p else 1.0
    return th.v1_yield(n, p)


def _theory_v2(k: int, r: int, p: float, model: str) -> float:
    if model == "bursty":
        ch = gilbert_channel(p)
        return th.gilbert_at_least(k, k + r, ch["p_gb"], ch["p_bg"]) if p else 1.0
    return th.v2_yield(k, r, p)


def _v2(v2: list[dict] | None, dr: int, model: str = "independent", parity=ADAPTIVE) -> list[dict]:
    """The measured v2 rows at ``dr`` with this loss model and parity, by loss."""
    return sorted((r for r in v2 or [] if r["dr"] == dr and r["model"] == model and r["parity"] == parity
                   and r.get("yield") is not None), key=lambda r: r["loss"])


def plot_yield_vs_loss(rows: list[dict], sizes: dict[int, int], out: Path, save, v2: list[dict] | None = None) -> str:
    drs = sorted({r["dr"] for r in rows})
    fig, axes = plt.subplots(2, len(drs), figsize=(4.2 * len(drs), 7.5), sharey=True, squeeze=False)
    ps = [i / 100 for i in range(0, 41, 2)]
    for col, dr in enumerate(drs):
        n, k = rows_n(rows, dr), v2_k(sizes[dr])
        for row, model in enumerate(("independent", "bursty")):
            ax = axes[row][col]
            rs = sorted((r for r in rows if r["dr"] == dr and r.get("model", "independent") == model),
                        key=lambda r: r["loss"])
            ax.plot([100 * p for p in ps], [_theory_v1(n, p, model) for p in ps], ":", color="#d62728",
                    label=f"v1 theory (all {n} of {n})")
            ax.plot([100 * r["loss"] for r in rs], [r["yield"] for r in rs], "o", color="#d62728",
                    label="v1 measured (real collector)")
            for rr, style in ((2, "--"), (4, "-.")):
                ax.plot([100 * p for p in ps], [_theory_v2(k, rr, p, model) for p in ps], style, color="#1f77b4",
                        label=f"v2 theory, r={rr}, no repair ({k} of {k + rr})")
            m2 = _v2(v2, dr, model)
            if m2:
                ax.plot([100 * r["loss"] for r in m2], [r["yield"] for r in m2], "s", color="#1f77b4",
                        label="v2 adaptive + repair, measured (real collector)")
            ax.set_title(f"EU868 DR{dr}, {model} loss")
            ax.set_xlabel("uplink loss (%)")
            ax.grid(True, alpha=0.3)
            ax.set_ylim(-0.02, 1.02)
        axes[0][col].legend(loc="lower left", fontsize=7)
    for row in (0, 1):
        axes[row][0].set_ylabel("record yield")
    return save(fig, "yield_vs_loss.png", out)


def rows_n(rows: list[dict], dr: int) -> int:
    return next(r["fragments"] for r in rows if r["dr"] == dr)


def plot_yield_vs_airtime(rows: list[dict], sizes: dict[int, int], dr: int, out: Path, save,
                          v2: list[dict] | None = None) -> str:
    """At ``dr``: yield against uplink airtime per generated record (s), at 10 % and 20 %
    independent loss: v2 with fixed parity 0..4 without repair (theory, every frame S
    bytes), v2 with fixed parity 0..4 and adaptive through the collector with repair
    rounds (measured, polls included), and v1 (measured)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    k = v2_k(sizes[dr])
    t_frame = frame_airtime_s(dr)
    for p, color in ((0.1, "#1f77b4"), (0.2, "#ff7f0e")):
        ys = [th.v2_yield(k, r, p) for r in PARITY]
        ax.plot([(k + r) * t_frame for r in PARITY], ys, "o--", color=color, mfc="none",
                label=f"v2 r=0..4, no repair (theory), {p:.0%} loss")
        fixed = [x for r in PARITY for x in _v2(v2, dr, parity=r) if abs(x["loss"] - p) < 1e-9]
        if fixed:
            ax.plot([x["airtime_per_record_s"] for x in fixed], [x["yield"] for x in fixed], "o-", color=color,
                    label=f"v2 r=0..4 + repair, measured, {p:.0%} loss")
            for x in fixed:
                ax.annotate(f"r={x['parity']}", (x["airtime_per_record_s"], x["yield"]), textcoords="offset points",
                            xytext=(3, -10), fontsize=7)
        ad = [x for x in _v2(v2, dr) if abs(x["loss"] - p) < 1e-9]
        if ad:
            ax.plot([ad[0]["airtime_per_record_s"]], [ad[0]["yield"]], "*", color=color, markersize=13,
                    label=f"v2 adaptive + repair, measured, {p:.0%} loss")
        m = [x for x in rows if x["dr"] == dr and x.get("model", "independent") == "independent"
             and abs(x["loss"] - p) < 1e-9 and x.get("airtime_per_record_s")]
        if m:
            ax.plot([m[0]["airtime_per_record_s"]], [m[0]["yield"]], "s", color=color, markersize=8,
                    label=f"v1 measured, {p:.0%} loss")
    ax.set_xlabel("uplink airtime per generated record (s; data, parity, repair rows and polls)")
    ax.set_ylabel("record yield")
    ax.set_title(f"Yield against airtime, EU868 DR{dr} ({k} data chunks of {sizes[dr] - 4} bytes)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, "yield_vs_airtime.png", out)


def plot_frames_vs_limit(rows: list[dict], sizes: dict[int, int], dr: int, out: Path, save,
                         v2: list[dict] | None = None) -> str:
    """Uplink airtime per delivered record against the erasure channel's limit,
    k / (1 - p) frames of S bytes, in seconds (polls are shorter frames)."""
    fig, ax = plt.subplots(figsize=(7.2, 4.8))
    n, k = rows_n(rows, dr), v2_k(sizes[dr])
    t_frame = frame_airtime_s(dr)
    ps = [i / 100 for i in range(0, 41, 2)]
    ax.plot([100 * p for p in ps], [th.erasure_limit_frames(k, p) * t_frame for p in ps], "k-", lw=2,
            label=f"limit k/(1-p) x {t_frame:.2f} s, k={k}")
    ax.plot([100 * p for p in ps], [1.15 * th.erasure_limit_frames(k, p) * t_frame for p in ps], "k:", lw=1,
            label="limit + 15 %")
    v1 = sorted((x for x in rows if x["dr"] == dr and x.get("model", "independent") == "independent"
                 and x.get("airtime_per_record_s")), key=lambda x: x["loss"])
    a1 = v1[0]["airtime_per_record_s"] if v1 else n * t_frame  # v1 sends every fragment once
    ax.plot([100 * p for p in ps], [a1 / th.v1_yield(n, p) for p in ps], ":", color="#d62728",
            label="v1 theory: airtime of n fragments / (1-p)^n")
    m = [x for x in v1 if x.get("airtime_per_delivered_record_s")]
    ax.plot([100 * x["loss"] for x in m], [x["airtime_per_delivered_record_s"] for x in m], "o", color="#d62728",
            label="v1 measured")
    for r, style in ((2, "--"), (4, "-.")):
        ax.plot([100 * p for p in ps], [th.v2_frames_per_delivered(k, r, p) * t_frame for p in ps], style,
                color="#1f77b4", alpha=0.6, label=f"v2 r={r}, no repair (theory)")
    colors = plt.get_cmap("viridis")
    for r in PARITY:
        f = [x for x in _v2(v2, dr, parity=r) if x.get("airtime_per_delivered_record_s")]
        if f:
            ax.plot([100 * x["loss"] for x in f], [x["airtime_per_delivered_record_s"] for x in f], "^",
                    color=colors(r / 5), label=f"v2 r={r} + repair, measured")
    ad = [x for x in _v2(v2, dr) if x.get("airtime_per_delivered_record_s")]
    if ad:
        ax.plot([100 * x["loss"] for x in ad], [x["airtime_per_delivered_record_s"] for x in ad], "*-",
                color="#1f77b4", markersize=11, label="v2 adaptive + repair, measured")
    ax.set_yscale("log")
    ax.set_xlabel("independent uplink and downlink loss (%)")
    ax.set_ylabel("uplink airtime per delivered record (s)")
    ax.set_title(f"Airtime per delivered record, EU868 DR{dr}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=6.5, ncol=2)
    return save(fig, "frames_vs_limit.png", out)


def v2_table(v2: list[dict]) -> tuple[list[str], list[list]]:
    """One row per measured v2 point."""
    head = ["DR", "loss model", "loss", "parity", "records", "yield", "95 % lower bound", "yield (followed)",
            "lost (gave up / radio / "
            "other)", "airtime / generated record s", "airtime / delivered record s", "limit s", "/ limit",
            "frames / delivered", "polls / record", "downlinks / record", "uplinks deaf", "expectations"]
    out = []
    for r in sorted(v2, key=lambda r: (r["dr"], r["model"], str(r["parity"]), r["loss"])):
        def f(x, fmt="{:.2f}"):
            return "n/a" if x is None else fmt.format(x)
        ratio = (r["airtime_per_delivered_record_s"] / r["limit_airtime_s"]
                 if r.get("airtime_per_delivered_record_s") else None)
        out.append([f"DR{r['dr']}", r["model"], f"{100 * r['loss']:.0f} %", r["parity"], r["records"],
                    f(r["yield"], "{:.4f}"), f(r.get("yield_lower_95"), "{:.4f}"), f(r.get("yield_followed"), "{:.4f}"),
                    f"{r.get('lost_gave_up')} / {r.get('lost_radio')} / {r.get('lost_other')}",
                    f(r.get("airtime_per_record_s")), f(r.get("airtime_per_delivered_record_s")),
                    f(r["limit_airtime_s"]), f(ratio, "{:.3f}"), f(r.get("frames_per_delivered"), "{:.1f}"),
                    f(r.get("polls_per_record")), f(r.get("downlinks_per_record")), r.get("uplinks_deaf", "-"),
                    "pass" if r.get("passed", True) else "FAIL: " + (", ".join(r.get("failed") or []) or "?")])
    return head, out


def yield_table(rows: list[dict], sizes: dict[int, int]) -> tuple[list[str], list[list]]:
    head = ["DR", "loss model", "loss", "records", "v1 yield", "v1 theory", "v2 r=2 theory", "v2 r=4 theory",
            "v1 frames / delivered", "limit k/(1-p)"]
    out = []
    for r in sorted(rows, key=lambda r: (r["dr"], r.get("model", "independent"), r["loss"])):
        model = r.get("model", "independent")
        n, k, p = r["fragments"], v2_k(sizes[r["dr"]]), r["loss"]
        fpd = r.get("frames_per_delivered")
        out.append([f"DR{r['dr']}", model, f"{100 * p:.0f} %", r.get("records", "-"), f"{r['yield']:.3f}",
                    f"{_theory_v1(n, p, model):.3f}", f"{_theory_v2(k, 2, p, model):.3f}",
                    f"{_theory_v2(k, 4, p, model):.3f}", f"{fpd:.1f}" if fpd else "n/a",
                    f"{th.erasure_limit_frames(k, p):.1f}"])
    return head, out


def headline(rows: list[dict], sizes: dict[int, int], dr: int = 0, files: list[dict] | None = None,
             v2: list[dict] | None = None) -> str:
    """The top of reports/README.md: yield at 10 % and 20 % loss, v1 against v2, and the
    airtime; v2 from the measured sweep (adaptive parity, repair rounds, through the
    real collector) where it has the point, else theory without repair."""
    parts = []
    n, k = rows_n(rows, dr), v2_k(sizes[dr])
    measured_v2 = False
    for p in (0.1, 0.2):
        m = [x for x in rows if x["dr"] == dr and x.get("model", "independent") == "independent"
             and abs(x["loss"] - p) < 1e-9]
        v1 = f"{m[0]['yield']:.1%} measured" if m else f"{th.v1_yield(n, p):.1%} in theory"
        fpd = m[0].get("frames_per_delivered") if m else None
        frames = f"{fpd:.0f} frames per delivered record measured" if fpd else \
            f"{th.v1_frames_per_delivered(n, p):.0f} frames per delivered record in theory"
        ad = [x for x in _v2(v2, dr) if abs(x["loss"] - p) < 1e-9 and x.get("airtime_per_delivered_record_s")]
        a1 = m[0].get("airtime_per_record_s") if m else None
        if ad:
            a = ad[0]
            measured_v2 = True
            cost = (f"{a['airtime_per_record_s'] / a1:.2f} x v1's airtime per generated record, "
                    if a1 else "")
            parts.append(f"{'At' if not parts else 'at'} {p:.0%} independent loss v1 delivers {v1} of the records "
                         f"({frames}); v2 with adaptive parity and repair rounds delivers {a['yield']:.1%} of "
                         f"{a['records']} records measured (95 % lower bound {a['yield_lower_95']:.1%}) for "
                         f"{cost}{a['airtime_per_delivered_record_s']:.1f} s of airtime per delivered record "
                         f"(the erasure limit is {a['limit_airtime_s']:.1f} s)")
            continue
        r = next((r for r in range(0, 33) if th.v2_yield(k, r, p) >= 0.999), 32)
        parts.append(f"{'At' if not parts else 'at'} {p:.0%} independent loss v1 delivers {v1} of the records "
                     f"({frames}); v2 with r = {r} "
                     f"parity rows and no repair round delivers {th.v2_yield(k, r, p):.2%} for {(k + r) / n:.2f} x "
                     f"v1's airtime per generated record ({th.v2_frames_per_delivered(k, r, p):.1f} frames per "
                     f"delivered record; the erasure limit is {th.erasure_limit_frames(k, p):.1f})")
    loop = closed_loop_rows(Path(__file__).with_name("repair_policy.md"))
    with_repair = [f"{r['whole']} at {p} loss for {r['airtime']} x v1's airtime" for p, r in loop.items()]
    repair = (" With repair rounds and adaptive parity (the reference device and the collector's core in one "
              f"closed loop, [repair_policy.md](repair_policy.md)) v2 delivers {'; '.join(with_repair)}."
              if with_repair else "")
    return (f"**Headline: record yield, EU868 DR{dr}, {n}-fragment records.** " + "; ".join(parts)
            + "." + repair + (" v1 and v2 points are measured through the real collector, in a closed loop with "
                              "downlinks ([scenarios.md](scenarios.md#record-yield-v1-against-v2)); the shipped v2 scenario files, "
                              if measured_v2 else
                              " v1 points are measured through the real collector; the v2 figures without repair "
                              "are theory ([scenarios.md](scenarios.md#record-yield-v1-against-v2)); ")
            + through_collector(files or []))


#: the scenario files that measure v2 through the real collector, and what each shows
V2_FILES = (("v2_loss_10pct", "v2 at 10% loss (TTS downlink push)"),
            ("v1_loss_10pct_dr0", "its v1 twin"),
            ("v2_loss_20pct", "v2 at 20% loss (ChirpStack queue)"),
            ("v2_gilbert_bursty", "v2 at 20% bursty loss (own downlink format)"),
            ("v2_collector_kill", "v2 with the collector killed during repair rounds"))


def through_collector(files: list[dict]) -> str:
    """The sentence on v2 fleets run through the real collector (closed loop, two
    gateways with downlink duty cycle and half-duplex), from the saved scenario results."""
    by_name = {f["name"]: f.get("values", {}) for f in files}
    said = []
    for name, what in V2_FILES:
        v = by_name.get(name, {})
        if isinstance(v.get("record_yield"), int | float):
            said.append(f"{what} {v['record_yield']:.1%} of {v.get('records', '?')} records")
    mixed = by_name.get("mixed_v1_v2", {}).get("airtime_v2_over_v1")
    if isinstance(mixed, int | float):
        said.append(f"v2 costs {mixed:.2f} x v1's airtime per generated record in a mixed fleet")
    if not said:
        return "v2 fleets through the real collector are not measured yet."
    return ("through the real collector, in a closed loop with Class A downlinks, gateway duty cycle and "
            "half-duplex ([scenarios.md](scenarios.md)): " + "; ".join(said) + ".")


def closed_loop_rows(path: Path) -> dict[str, dict[str, str]]:
    """The 10 % and 20 % 'v2 adaptive + repair' rows of repair_policy.md's table
    (loss -> whole, airtime x v1); empty when the file or the rows are missing."""
    out: dict[str, dict[str, str]] = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 6 and cells[0] in ("10%", "20%") and cells[1] == "v2 adaptive + repair":
            out[cells[0]] = {"whole": cells[2], "airtime": cells[5]}
    return out
