"""The scenario file format (TOML): what to simulate, how the collector and the Web
App behave, which faults to inject, and the expectations the run must meet.

:func:`load_scenario` reads a file, :func:`scenario_from_dict` builds a
:class:`Scenario` from its parsed form; both raise :class:`ScenarioError` with a
message naming the offending key. The format is documented in docs/scenarios.md.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from collector import tomlconfig
from collector.service.config import FIELDS as COLLECTOR_FIELDS
from devicesim.config import ConfigError, SimConfig, config_from_dict


class ScenarioError(ValueError):
    """A scenario file that cannot be used; the message names the file and the key."""


#: collector settings the runner owns (ports, files, tokens, clock)
RUNNER_OWNED = frozenset({
    "host", "port", "db", "ingest_token", "ttn_token", "chirpstack_token", "generic_token", "api_token",
    "allow_anonymous", "auth_header", "webapp_url", "webapp_token", "webapp_username", "webapp_password",
    "upload_path", "login_path", "clock", "clock_start", "devices_file",
})

#: Web App fault settings (collector.testing.webapp_stub.Faults) a scenario may set for the whole run
WEBAPP_FAULTS = ("error_rate", "error_status", "rate_limit_rate", "retry_after", "latency", "reject_status")

_OPS = {">=": (lambda v, x: v >= x), "<=": (lambda v, x: v <= x), "==": (lambda v, x: v == x),
        ">": (lambda v, x: v > x), "<": (lambda v, x: v < x)}
_EXPR = re.compile(r"^\s*(>=|<=|==|>|<)?\s*([-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?)\s*$")


@dataclass(frozen=True)
class Expectation:
    """``name op limit``, e.g. ``delivered_ratio >= 1.0``."""

    name: str
    op: str
    limit: float

    def check(self, value: float | None) -> bool:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return False
        return bool(_OPS[self.op](value, self.limit))

    @property
    def text(self) -> str:
        return f"{self.op} {self.limit:g}"


@dataclass
class Window:
    """A span of virtual time, seconds after the scenario's start."""

    start_s: float
    end_s: float


@dataclass
class Kill:
    """``kill -9`` the collector at ``at_s`` and start it again ``down_s`` later (the
    network server's uplinks in between are refused: TTS and ChirpStack do not retry)."""

    at_s: float
    down_s: float = 0.0


@dataclass
class HilSpec:
    """Records sent through emulated radio modules by the real drivers."""

    modules: tuple[str, ...] = ("rn2483",)
    region: str = "US915"
    dr: int = 0
    records: int = 1
    #: quiet time between two records of one module (virtual seconds)
    record_gap_s: float = 600.0


@dataclass
class Scenario:
    name: str
    description: str = ""
    path: str | None = None
    seed: int = 1
    hours: float = 6.0
    #: "devicesim" (a simulated fleet) or "hil" (emulated modules through the drivers)
    source: str = "devicesim"
    sim: SimConfig = field(default_factory=SimConfig)
    hil: HilSpec | None = None
    #: collector settings (ServiceConfig fields), as given
    collector: dict[str, Any] = field(default_factory=dict)
    #: Web App faults for the whole run
    webapp: dict[str, Any] = field(default_factory=dict)
    webapp_outages: list[Window] = field(default_factory=list)
    kills: list[Kill] = field(default_factory=list)
    #: uplinks less than this apart (virtual seconds) are posted together at the first one's time
    time_quantum_s: float = 1.0
    #: largest step of the virtual clock (deadlines and retries are seen at most this late)
    max_step_s: float = 60.0
    #: how long after the last uplink the runner keeps advancing until nothing is left to do
    drain_hours: float = 48.0
    #: uplinks in flight at once (different devices; one device's uplinks go in order)
    concurrency: int = 16
    expect: list[Expectation] = field(default_factory=list)


_KEYS = {"name", "description", "seed", "hours", "source"}
_TABLES = {"devicesim", "hil", "collector", "webapp", "faults", "run", "expect"}
_HIL = {"modules", "region", "dr", "records", "record_gap_s"}
_RUN = {"time_quantum_s", "max_step_s", "drain_hours", "concurrency"}


def _err(where: str, msg: str) -> ScenarioError:
    return ScenarioError(f"{where}: {msg}")


def _table(d: dict, key: str, where: str) -> dict:
    try:
        return dict(tomlconfig.table(d, key))
    except ConfigError as e:
        raise _err(where, str(e)) from None


def _check(d: dict, keys: Iterable[str], where: str, sub: str = "", tables: Iterable[str] = (), **kw: str) -> None:
    """Unknown keys and tables of ``d`` (the scenario's table ``sub``) are errors."""
    try:
        tomlconfig.check_keys(d, set(keys), set(tables), where=sub, **kw)
    except ConfigError as e:
        raise _err(where, str(e)) from None


def _number(v: Any, key: str, where: str, *, minimum: float | None = None) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise _err(where, f"{key}: expected a number, got {v!r}")
    if minimum is not None and v < minimum:
        raise _err(where, f"{key}: must be >= {minimum:g}, got {v!r}")
    return float(v)


def parse_expectation(name: str, value: Any, where: str = "expect") -> Expectation:
    """``">= 1.0"``, ``"< 5"``, ``"== 0"`` or a bare number (meaning ``==``)."""
    from scenarios.measure import MEASUREMENTS

    if name not in MEASUREMENTS:
        raise _err(where, f"unknown measurement {name!r}; known: {', '.join(sorted(MEASUREMENTS))}")
    if isinstance(value, int | float) and not isinstance(value, bool):
        return Expectation(name, "==", float(value))
    m = _EXPR.match(value) if isinstance(value, str) else None
    if not m:
        raise _err(where, f"{name}: expected a limit like \">= 1.0\" or \"<= 30\", got {value!r}")
    return Expectation(name, m.group(1) or "==", float(m.group(2)))


def _windows(v: Any, key: str, where: str) -> list[Window]:
    if not isinstance(v, list):
        raise _err(where, f"{key}: expected a list of [start_s, end_s] pairs")
    out = []
    for i, w in enumerate(v):
        if (not isinstance(w, list) or len(w) != 2
                or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in w) or w[1] <= w[0]):
            raise _err(where, f"{key}[{i}]: expected [start_s, end_s] with end_s > start_s, got {w!r}")
        out.append(Window(float(w[0]), float(w[1])))
    return out


def scenario_from_dict(data: dict, *, where: str = "scenario", path: str | None = None) -> Scenario:
    """Build a :class:`Scenario` from its TOML form; raises :class:`ScenarioError`."""
    data = copy.deepcopy(data)
    _check(data, _KEYS, where, tables=_TABLES)
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise _err(where, "name: required (a short identifier)")
    sc = Scenario(name=name, path=path)
    sc.description = str(data.get("description", ""))
    seed = data.get("seed", 1)
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _err(where, f"seed: expected an integer >= 0, got {seed!r}")
    sc.seed = seed
    sc.hours = _number(data.get("hours", 6.0), "hours", where, minimum=0.0)
    if sc.hours <= 0:
        raise _err(where, "hours: must be > 0")
    sc.source = data.get("source", "devicesim")
    if sc.source not in ("devicesim", "hil"):
        raise _err(where, f"source: expected \"devicesim\" or \"hil\", got {sc.source!r}")

    sim = _table(data, "devicesim", where)
    for k in ("seed", "hours"):
        if k in sim:
            raise _err(where, f"devicesim.{k}: set {k} at the top of the scenario, not in [devicesim]")
    try:
        sc.sim = config_from_dict({**sim, "seed": sc.seed, "hours": sc.hours})
    except ConfigError as e:
        msg = str(e)
        msg = "devicesim:" + msg[len("config:"):] if msg.startswith("config:") else "devicesim." + msg
        raise _err(where, msg) from None

    if sc.source == "hil":
        h = _table(data, "hil", where)
        _check(h, _HIL, where, "hil")
        from hil.emulator import MODULES

        mods = tuple(h.get("modules", ("rn2483",)))
        for m in mods:
            if m not in MODULES:
                raise _err(where, f"hil.modules: unknown module {m!r}; known: {', '.join(MODULES)}")
        spec = HilSpec(modules=mods, region=str(h.get("region", "US915")), dr=h.get("dr", 0),
                       records=h.get("records", 1), record_gap_s=_number(h.get("record_gap_s", 600.0),
                                                                         "hil.record_gap_s", where, minimum=0))
        if not isinstance(spec.records, int) or isinstance(spec.records, bool) or spec.records < 1:
            raise _err(where, f"hil.records: expected an integer >= 1, got {spec.records!r}")
        try:
            from collector.core.lorawan import region

            region(spec.region).dr(spec.dr)
        except ValueError as e:
            raise _err(where, f"hil.region/dr: {e}") from None
        sc.hil = spec
    elif "hil" in data:
        raise _err(where, "hil: only used with source = \"hil\"")

    col = _table(data, "collector", where)
    _check(col, COLLECTOR_FIELDS, where, "collector", noun="setting", known="see docs/operations.md")
    for k, v in col.items():
        if k in RUNNER_OWNED:
            raise _err(where, f"collector.{k}: set by the runner, not by a scenario")
        if isinstance(v, dict | list):
            raise _err(where, f"collector.{k}: expected a single value, got {type(v).__name__}")
    try:
        from collector.service.config import load_config

        load_config(None, env={}, overrides=col)
    except ValueError as e:
        raise _err(where, f"collector: {e}") from None
    sc.collector = col

    web = _table(data, "webapp", where)
    _check(web, ("outages", *WEBAPP_FAULTS), where, "webapp")
    for k, v in web.items():
        if k == "outages":
            sc.webapp_outages = _windows(v, "webapp.outages", where)
        elif k in WEBAPP_FAULTS:
            if k == "reject_status":
                if isinstance(v, bool) or not isinstance(v, int) or not 100 <= v <= 599:
                    raise _err(where, f"webapp.reject_status: expected an HTTP status, got {v!r}")
            else:
                _number(v, f"webapp.{k}", where, minimum=0)
            sc.webapp[k] = v

    faults = _table(data, "faults", where)
    _check(faults, ("kill",), where, "faults")
    for v in faults.values():
        if not isinstance(v, list):
            raise _err(where, "faults.kill: expected a list of {at_s, down_s} tables ([[faults.kill]])")
        for i, kd in enumerate(v):
            w = f"faults.kill[{i}]"
            if not isinstance(kd, dict):
                raise _err(where, f"{w}: expected a table with at_s (and down_s)")
            _check(kd, ("at_s", "down_s"), where, w)
            if "at_s" not in kd:
                raise _err(where, f"{w}.at_s: required")
            sc.kills.append(Kill(_number(kd["at_s"], f"{w}.at_s", where, minimum=0),
                                 _number(kd.get("down_s", 0.0), f"{w}.down_s", where, minimum=0)))
    sc.kills.sort(key=lambda k: k.at_s)

    run = _table(data, "run", where)
    _check(run, _RUN, where, "run")
    for k, v in run.items():
        if k == "concurrency":
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise _err(where, f"run.concurrency: expected an integer >= 1, got {v!r}")
            sc.concurrency = v
        else:
            setattr(sc, k, _number(v, f"run.{k}", where, minimum=0))
    if sc.max_step_s <= 0:
        raise _err(where, "run.max_step_s: must be > 0")

    exp = _table(data, "expect", where)
    sc.expect = [parse_expectation(k, v, f"{where}: expect") for k, v in exp.items()]
    return sc


def load_scenario(path: str | Path) -> Scenario:
    """Read and check one scenario file."""
    p = Path(path)
    try:
        data = tomlconfig.read_toml(p, "scenario")
    except ConfigError as e:
        raise ScenarioError(str(e)) from None
    return scenario_from_dict(data, where=str(p), path=str(p))


def files_dir() -> Path:
    """The directory of the scenario files shipped with the package."""
    return Path(__file__).with_name("files")


def shipped_files() -> list[Path]:
    return sorted(files_dir().glob("*.toml"))
