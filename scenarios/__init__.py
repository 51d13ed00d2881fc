"""Declarative end-to-end scenarios: a simulated fleet (or emulated radio modules)
through the real collector to the stand-in Web App, in virtual time, checked against
the simulator's ground truth. See docs/scenarios.md."""

from scenarios.measure import MEASUREMENTS, expected_outcome, measure
from scenarios.runner import RunError, ScenarioResult, run_scenario
from scenarios.spec import (
    Expectation,
    Scenario,
    ScenarioError,
    load_scenario,
    scenario_from_dict,
    shipped_files,
)

__all__ = [
    "MEASUREMENTS", "Expectation", "RunError", "Scenario", "ScenarioError", "ScenarioResult", "expected_outcome",
    "load_scenario", "measure", "run_scenario", "scenario_from_dict", "shipped_files",
]
