"""Run a scenario end to end: simulate (or send through emulated modules), drive the
real collector over HTTP in virtual time, and compare what the Web App received with
the ground truth.

The collector runs as ``collector serve --clock manual`` in its own process (on a
free port, with a fresh SQLite file), so a scenario can ``kill -9`` it and start it
again; the stand-in Web App runs in the runner's event loop and notes the virtual
time of every upload it answers. Uplinks are posted in delivery-time order: the
clock is set to an uplink's delivery time before it is posted (uplinks less than
``time_quantum_s`` apart go together, concurrently across devices, in order within a
device), and moves at most ``max_step_s`` at a time so deadlines and retries happen
when they are due. After the last uplink the runner keeps advancing until no
message is open and no document is pending (or ``drain_hours`` pass).

The collector process and the driver live in driver.py (v2 fleets: closedloop.py);
what is measured lives in measure.py and yields.py.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from scenarios.driver import Driver, Progress, RunError
from scenarios.measure import Acked, Expected, expected_outcome, measure
from scenarios.plan import Plan, devicesim_plan
from scenarios.spec import Scenario
from scenarios.yields import fates_from

__all__ = ["Driver", "ExpectationResult", "Progress", "RunError", "ScenarioResult", "make_plan", "run_scenario"]


# --------------------------------------------------------------------------- the result


@dataclass
class ExpectationResult:
    name: str
    value: float | int | None
    op: str
    limit: float
    passed: bool


@dataclass
class ScenarioResult:
    name: str
    path: str | None
    seed: int
    description: str
    passed: bool
    values: dict[str, Any]
    expectations: list[ExpectationResult]
    source: dict
    timings: dict[str, float]
    details: dict = field(default_factory=dict)
    error: str | None = None

    def to_dict(self, *, with_details: bool = True) -> dict:
        d = {
            "name": self.name, "path": self.path, "seed": self.seed, "description": self.description,
            "passed": self.passed, "error": self.error,
            "expectations": [{"name": e.name, "value": e.value, "op": e.op, "limit": e.limit, "passed": e.passed}
                             for e in self.expectations],
            "values": self.values, "source": self.source, "timings": self.timings,
        }
        if with_details:
            d["details"] = self.details
        return d


# --------------------------------------------------------------------------- entry point


def scratch_dir() -> str | None:
    """Where the run's database goes: a RAM-backed directory when the system has one
    (the scenarios check behaviour, not the disk's fsync speed), else the default."""
    shm = "/dev/shm"
    return shm if os.path.isdir(shm) and os.access(shm, os.W_OK) else None


def make_plan(sc: Scenario, progress: Callable[[float], None] | None = None) -> Plan:
    if sc.source == "hil":
        from scenarios.hilsource import hil_plan

        return hil_plan(sc)
    return devicesim_plan(sc, progress)


def run_scenario(sc: Scenario, *, workdir: str | Path | None = None,
                 progress: Progress | None = None) -> ScenarioResult:
    """Run one scenario and check its expectations (see docs/scenarios.md)."""
    tick = progress or (lambda f, s: None)
    t0 = time.monotonic()
    tick(0.0, "simulating")
    closed = sc.source == "devicesim" and sc.sim.devices.any_v2
    plan = None if closed else make_plan(sc, lambda f: tick(0.1 * f, "simulating"))
    t_plan = time.monotonic() - t0
    with tempfile.TemporaryDirectory(prefix="scenario-", dir=scratch_dir()) as tmp:
        wd = Path(workdir).resolve() if workdir else Path(tmp)
        wd.mkdir(parents=True, exist_ok=True)
        if plan is None:  # v2 devices answer the collector's downlinks: the closed loop
            from scenarios.closedloop import LoopDriver

            driver: Driver = LoopDriver(sc, wd, tick)
        else:
            driver = Driver(sc, plan, wd, tick)
        obs, acked, info = asyncio.run(driver.run())
    plan = driver.plan
    expected = expected_outcomes(plan, acked)
    fates = fates_from(plan.records, driver.refused, acked)
    values, details = measure(expected, obs, fates, wires=["v1" if r.need is None else "v2" for r in plan.records])
    if closed:
        values["repair_rounds"] = getattr(driver, "repair_rounds", 0)
    sim = plan.source.get("simulator") or {}
    values["collision_loss"] = (sim["lost_collision"] / sim["uplinks_sent"]
                                if sim.get("uplinks_sent") and "lost_collision" in sim else None)
    tick(1.0, "done")
    checks = []
    for e in sc.expect:
        v = values.get(e.name)
        checks.append(ExpectationResult(e.name, v, e.op, e.limit, e.check(v)))
    timings = {"plan_s": round(t_plan, 3), **{k: round(v, 3) for k, v in info["timings"].items()},
               "total_s": round(time.monotonic() - t0, 3)}
    details.update(ingest_errors=info["ingest_errors"], clock_steps=info["clock_steps"])
    return ScenarioResult(sc.name, sc.path, sc.seed, sc.description, all(c.passed for c in checks), values,
                          checks, plan.source, timings, details)


def expected_outcomes(plan: Plan, acked: dict[int, dict[int, Acked]]) -> list[Expected]:
    return [expected_outcome(record_id=r.record_id, dev_eui=r.dev_eui, msg_id=r.msg_id, record=r.record,
                             fragments=r.fragments, size=r.size, created_at=r.created_at,
                             acked=acked.get(r.record_id, {}), need=r.need)
            for r in plan.records]
