"""The v2 half of the loss sweep in reports/scenarios.md: v2 fleets through the real
collector in a closed loop with Class A downlinks (ACK / NEED / REDUNDANCY), fixed
parity 0..4 or the collector's adaptive policy, and the check of the adaptive policy
against the physical limit of an erasure channel.

- :func:`v2_scenario` builds one sweep point (a scenario in its TOML form);
- :func:`run_points` runs scenario tables through :func:`scenarios.runner.run_scenario`,
  in worker processes when asked (each point is seeded: the same rows whatever the
  order or the number of workers);
- :func:`limit_check` is the checked result: does the adaptive policy come within 15 %
  of the limit k / (1 - p) at 10-30 % loss while keeping the record yield >= 99.9 %?
  n/a when a point was not measured;
- :func:`yield_lower_bound`: what a measured yield of N records supports (one-sided 95 %
  Clopper-Pearson; with none lost about 1 - 3/N).

Airtime is compared in seconds, the limit being k / (1 - p) frames of S bytes: every
v2 data and parity frame carries S bytes, but a poll is a shorter frame, so frames
are not all of one cost.
"""

from __future__ import annotations

import math
import multiprocessing
from collections.abc import Callable, Iterable

RECORD_BYTES = 658
ADAPTIVE = "adaptive"

#: the checked claim: the adaptive policy's airtime per delivered record within this
#: share of the limit, at these losses (independent, DR0), with at least this yield
CHECK_MARGIN = 0.15
CHECK_LOSSES = (0.1, 0.2, 0.3)
CHECK_YIELD = 0.999
CHECK_DR = 0
#: The Things Stack's Class A timing, which the sweep's format (its webhook and
#: downlink push) goes with: RX1 5 s after the uplink (the delay it recommends for
#: every deployment), and its network server takes a queued application downlink for
#: an uplink's windows shortly before RX1, modelled 3 s after the deduplication window
#: (about 1.7 s before RX1, for the gateway's round trip and the server's own
#: scheduling window). An answer the collector queues within that time goes out in the
#: windows of the uplink it answers. The simulator's default is ChirpStack's (RX1 1 s,
#: the queue read 100 ms after deduplication: an answer always waits for the next
#: uplink); docs/repair.md compares the two.
TTS_DOWNLINKS = {"rx1_delay_s": 5.0, "read_delay_s": 3.0}


def v2_k(size: int) -> int:
    """Data chunks of the record at fragment size S (the wire format's own geometry)."""
    from collector.core.wire2 import geometry
    return geometry(RECORD_BYTES, size)[0]


def frame_airtime_s(dr: int, size: int | None = None) -> float:
    """Seconds on air of one EU868 uplink of ``size`` FRMPayload bytes (default: the DR's
    maximum payload, which is the sweep's S)."""
    from collector.core.lorawan import region

    d = region("EU868").dr(dr)
    return d.time_on_air(d.max_payload if size is None else size)


def limit_airtime_s(dr: int, p: float) -> float:
    """The erasure channel's limit in seconds: k / (1 - p) frames of S bytes."""
    from yield_theory import erasure_limit_frames

    from collector.core.lorawan import region

    size = region("EU868").dr(dr).max_payload
    return erasure_limit_frames(v2_k(size), p) * frame_airtime_s(dr, size)


def v2_scenario(dr: int, p: float, *, model: str = "independent", parity: int | str = ADAPTIVE,
                devices: int = 20, records: int = 3) -> dict:
    """One v2 sweep point: ``devices`` EU868 devices at DR ``dr`` on wire format v2
    (``parity`` rows per message or ``"adaptive"``), each making ``records`` 658-byte
    records about two hours apart (random phase per device), through the real
    collector in a closed loop: two gateways (downlink duty cycle, half-duplex),
    downlinks by The Things Stack's push with its timing (:data:`TTS_DOWNLINKS`), the
    same loss ``p`` on uplinks and downlinks, independent (Bernoulli) or bursty
    (Gilbert-Elliott of the same mean). Messages started before the end of the run
    finish after it (the simulator's default)."""
    from yield_report import gilbert_channel

    channel = {"model": "bernoulli", "p": p} if model == "independent" else gilbert_channel(p)
    every_min = 120
    tag = "adaptive" if parity == ADAPTIVE else f"r{parity}"
    return {
        "name": f"v2-dr{dr}-p{int(round(p * 100))}-{tag}{'-bursty' if model == 'bursty' else ''}",
        "seed": 300 + dr,
        "hours": records * every_min / 60,  # records start before the end; their messages finish after it
        "devicesim": {"region": "EU868", "format": "ttn", "start": "2026-11-23T23:00:00Z",
                      "devices": {"count": devices, "radius_m": 200, "dr": {"kind": "fixed", "dr": dr},
                                  "schedule": {"kind": "every", "every_min": every_min, "jitter_min": 10},
                                  "wire": "v2", "parity": parity},
                      "channel": channel, "gateways": {"count": 2},
                      "network": {"downlinks": dict(TTS_DOWNLINKS)}},
        "run": {"max_step_s": 120},
        "expect": {"complete_documents_exact": "== 1.0", "duplicate_deliveries": "== 0",
                   "unexpected_documents": "== 0", "ingest_errors": "== 0", "unsettled": "== 0"},
    }


def _run_one(table: dict) -> dict:
    from scenarios.runner import run_scenario
    from scenarios.spec import scenario_from_dict

    res = run_scenario(scenario_from_dict(table))
    sim = (res.source or {}).get("simulator") or {}
    return {"name": res.name, "passed": res.passed, "values": res.values, "wall_s": res.timings["total_s"],
            "failed": [c.name for c in res.expectations if not c.passed], "uplinks_deaf": sim.get("uplinks_deaf")}


def run_points(tables: list[dict], jobs: int = 1, log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Run the scenario tables, ``jobs`` at a time (worker processes when ``jobs`` > 1);
    the results come back in the order of ``tables``."""
    if jobs <= 1:
        out = []
        for t in tables:
            log(f"sweep: {t['name']}")
            out.append(_run_one(t))
        return out
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(jobs, maxtasksperchild=1) as pool:
        pending = [pool.apply_async(_run_one, (t,)) for t in tables]
        out = []
        for t, r in zip(tables, pending, strict=True):
            out.append(r.get())
            log(f"sweep: {t['name']} ({out[-1]['wall_s']:.0f} s)")
        return out


def v2_row(dr: int, p: float, model: str, parity: int | str, res: dict) -> dict:
    """A sweep row (the v1 rows' keys where they mean the same) from a run's result."""
    v = res["values"]
    from collector.core.lorawan import region

    size = region("EU868").dr(dr).max_payload
    n = v.get("records") or 0
    yielded = v.get("records_yielded") or 0
    return {"wire": "v2", "dr": dr, "loss": p, "model": model, "parity": parity, "k": v2_k(size), "size": size,
            "passed": res["passed"], "failed": res.get("failed", []), "records": n, "records_yielded": yielded, "yield": v.get("record_yield"),
            "yield_lower_95": yield_lower_bound(yielded, n) if n else None,
            "yield_followed": v.get("record_yield_followed"),
            "lost_other": v.get("lost_other"), "lost_gave_up": v.get("lost_gave_up"),
            "lost_radio": v.get("lost_radio"),
            "frames_per_delivered": v.get("frames_per_delivered_record"),
            "airtime_per_record_s": v.get("airtime_per_record_s"),
            "airtime_per_delivered_record_s": v.get("airtime_per_delivered_record_s"),
            "frame_airtime_s": frame_airtime_s(dr, size), "limit_airtime_s": limit_airtime_s(dr, p),
            "parity_rows_per_record": v.get("parity_rows_per_record"), "polls_per_record": v.get("polls_per_record"),
            "downlinks_per_record": v.get("downlinks_per_record"), "repair_rounds": v.get("repair_rounds"),
            "uplinks": v.get("uplinks"), "uplinks_deaf": res.get("uplinks_deaf"), "wall_s": res["wall_s"]}


# --------------------------------------------------------------------------- statistics


def _log_binom_tail_ge(n: int, s: int, q: float) -> float:
    """log P(Bin(n, q) >= s)."""
    if s <= 0:
        return 0.0
    if q <= 0.0:
        return -math.inf
    if q >= 1.0:
        return 0.0
    terms = [math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1) + j * math.log(q)
             + (n - j) * math.log1p(-q) for j in range(s, n + 1)]
    m = max(terms)
    return m + math.log(sum(math.exp(t - m) for t in terms))


def yield_lower_bound(successes: int, n: int, conf: float = 0.95) -> float:
    """One-sided lower confidence bound on a yield of ``successes`` in ``n``
    (Clopper-Pearson): the smallest q under which seeing ``successes`` or more still
    has probability 1 - conf. With every record yielded it is (1 - conf)^(1/n), about
    1 - 3/n at 95 %."""
    if not 0 <= successes <= n or n <= 0:
        raise ValueError("need 0 <= successes <= n and n > 0")
    if successes == 0:
        return 0.0
    alpha = math.log(1.0 - conf)
    lo, hi = 0.0, 1.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if _log_binom_tail_ge(n, successes, mid) < alpha:
            lo = mid
        else:
            hi = mid
    return lo


# --------------------------------------------------------------------------- the check


def find(rows: Iterable[dict], *, dr: int, loss: float, model: str = "independent",
         parity: int | str = ADAPTIVE) -> dict | None:
    for r in rows:
        if (r.get("wire") == "v2" and r["dr"] == dr and abs(r["loss"] - loss) < 1e-9 and r["model"] == model
                and r["parity"] == parity):
            return r
    return None


def limit_check(rows: list[dict], *, dr: int = CHECK_DR, losses: tuple[float, ...] = CHECK_LOSSES,
                margin: float = CHECK_MARGIN, min_yield: float = CHECK_YIELD) -> dict:
    """Does v2 adaptive come within ``margin`` of the limit at every loss in ``losses``
    (airtime per delivered record <= (1 + margin) x k / (1 - p) x one S-byte frame's
    airtime) with a record yield >= ``min_yield``? ``result`` is "pass", "fail" or
    "n/a" (a point missing or without a delivered record: nothing to check)."""
    points = []
    for p in losses:
        r = find(rows, dr=dr, loss=p)
        if r is None or not r.get("records") or r.get("airtime_per_delivered_record_s") is None:
            points.append({"loss": p, "measured": False})
            continue
        ratio = r["airtime_per_delivered_record_s"] / r["limit_airtime_s"]
        # the steady-state yield: over the records their device followed with another
        # (a device's last record of a finite run has no later uplink to bring a repeated
        # NEED; a device in service always sends one); the plain yield where not measured
        steady = r["yield"] if r.get("yield_followed") is None else r["yield_followed"]
        ok_air, ok_yield = ratio <= 1.0 + margin, steady >= min_yield
        points.append({"loss": p, "measured": True, "records": r["records"], "yield": r["yield"],
                       "yield_followed": r.get("yield_followed"), "yield_checked": steady,
                       "yield_lower_95": r.get("yield_lower_95"),
                       "airtime_per_delivered_record_s": r["airtime_per_delivered_record_s"],
                       "limit_airtime_s": r["limit_airtime_s"], "over_limit": ratio,
                       "within_margin": ok_air, "yield_ok": ok_yield})
    # a measured point that misses fails the claim; otherwise a point not measured leaves it n/a
    if any(pt["measured"] and not (pt["within_margin"] and pt["yield_ok"]) for pt in points):
        result = "fail"
    elif all(pt["measured"] for pt in points):
        result = "pass"
    else:
        result = "n/a"
    return {"claim": (f"v2 adaptive, EU868 DR{dr}, independent loss "
                      f"{', '.join(f'{100 * p:.0f} %' for p in losses)}: airtime per delivered record within "
                      f"{100 * margin:.0f} % of k/(1-p) S-byte frames, record yield >= {100 * min_yield:.1f} % over "
                      f"the records their device followed with another"),
            "dr": dr, "margin": margin, "min_yield": min_yield, "result": result, "points": points}


# --------------------------------------------------------------------------- the sweep


def plan(quick: bool) -> list[tuple[int, float, str, int | str, int, int]]:
    """The v2 points: ``(dr, loss, model, parity, devices, records per device)``.

    - adaptive, independent and bursty loss, DR0/DR3/DR5, 10-40 %: 20 devices x 3
      records (60 records a point, as the v1 sweep);
    - the checked points (adaptive, independent, DR0, 10/20/30 %): 40 devices x 5
      records (200 records: with none lost, yield >= 98.5 % at 95 % confidence);
    - fixed parity r = 0..4 (with repair rounds), independent, DR0, 10 % and 20 %:
      20 devices x 2 records.
    """
    if quick:
        return [(0, 0.2, "independent", ADAPTIVE, 4, 1), (5, 0.2, "independent", ADAPTIVE, 4, 1),
                (0, 0.2, "independent", 2, 4, 1)]
    pts: list[tuple[int, float, str, int | str, int, int]] = []
    for model in ("independent", "bursty"):
        for dr in (0, 3, 5):
            for p in (0.1, 0.2, 0.3, 0.4):
                checked = model == "independent" and dr == CHECK_DR and any(abs(p - c) < 1e-9 for c in CHECK_LOSSES)
                pts.append((dr, p, model, ADAPTIVE, 40, 5) if checked else (dr, p, model, ADAPTIVE, 20, 3))
    for p in (0.1, 0.2):
        for r in (0, 1, 2, 3, 4):
            pts.append((0, p, "independent", r, 20, 2))
    return pts


def run_sweep(quick: bool, jobs: int, log: Callable[[str], None]) -> list[dict]:
    """Run :func:`plan` through the real collector; one row per point."""
    pts = plan(quick)
    tables = [v2_scenario(dr, p, model=m, parity=r, devices=d, records=n) for dr, p, m, r, d, n in pts]
    # the longest points first, so that two workers finish together
    order = sorted(range(len(pts)), key=lambda i: -(pts[i][4] * pts[i][5] * (3 if pts[i][0] == 0 else 1)))
    results = run_points([tables[i] for i in order], jobs, log)
    by_index = dict(zip(order, results, strict=True))
    return [v2_row(dr, p, m, r, by_index[i]) for i, (dr, p, m, r, _, _) in enumerate(pts)]
