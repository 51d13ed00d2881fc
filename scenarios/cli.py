"""``scenarios``: run scenario files against the real collector and show the outcome.

    scenarios run scenarios/files/quickstart.toml
    scenarios run scenarios/files/*.toml --json results.json --quiet
    scenarios list
    scenarios check FILE...

Flags may also come from environment variables ``SCENARIOS_<COMMAND>_<OPTION>``
(e.g. ``SCENARIOS_RUN_JSON=out.json``).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from collector.testing.progress import ProgressBar
from scenarios.spec import Scenario, ScenarioError, files_dir, load_scenario, shipped_files


def resolve(arg: str) -> Path:
    """A path, or the name of a shipped scenario (``quickstart``)."""
    p = Path(arg)
    if p.exists():
        return p
    shipped = files_dir() / (arg if arg.endswith(".toml") else arg + ".toml")
    if shipped.exists():
        return shipped
    raise click.BadParameter(f"no scenario file {arg!r} (and no shipped scenario of that name; see "
                             "`scenarios list`)", param_hint="FILE")


def _fmt(v) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        if v != v:
            return "nan"
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
    return str(v)


def expectation_table(result) -> str:
    rows = [("expectation", "value", "limit", "result")]
    for e in result.expectations:
        verdict = "pass" if e.passed else ("FAIL (n/a: nothing to measure)" if e.value is None else "FAIL")
        rows.append((e.name, _fmt(e.value), f"{e.op} {e.limit:g}", verdict))
    w = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w[i]) for i, c in enumerate(r)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * x for x in w))
    return "\n".join(lines)


def _pct(v) -> str:
    return "n/a" if v is None else f"{100 * v:.1f} %"


def yield_line(v: dict) -> str:
    """The headline: how many of the records the devices made arrived, and what the rest were lost to."""
    n = v.get("records", 0)
    lost = [(c, v.get(f"lost_{c}", 0)) for c in ("radio", "network_server", "collector_down", "gave_up", "other")]
    why = ", ".join(f"{k} {c.replace('_', ' ')}" for c, k in lost if k) or "none"
    air = v.get("airtime_per_delivered_record_s")
    return (f"yield {_pct(v.get('record_yield'))}: {v.get('records_yielded', 0)} of {n} records reached the Web App "
            f"complete and exact ({_pct(v.get('record_delivered'))} with a document); lost to: {why}; "
            f"airtime {_fmt(v.get('airtime_per_record_s'))} s per record, "
            f"{_fmt(air)} s per delivered record")


def summary(result) -> str:
    v = result.values
    lat = (f"virtual time from a record's creation to the Web App: p50 {_fmt(v.get('end_to_end_p50_s'))} s, "
           f"p95 {_fmt(v.get('end_to_end_p95_s'))} s; from its last fragment's arrival: "
           f"p50 {_fmt(v.get('latency_p50_s'))} s, p95 {_fmt(v.get('latency_p95_s'))} s, "
           f"max {_fmt(v.get('latency_max_s'))} s")
    return "\n".join([
        yield_line(v),
        f"records {v['records']} ({v['records_reached']} reached the collector), uplinks {v['uplinks']} "
        f"({v['uplinks_acked']} acknowledged, {v['uplinks_refused']} refused while down, "
        f"{v['ingest_errors']} errors)",
        f"documents {v['documents']} ({v['documents_complete']} complete, {v['documents_partial']} partial) of "
        f"{v['expected_documents']} due; incidents {v['incidents']} ({v['expected_incidents']} due); "
        f"dead letters {v['dead_letters']}",
        lat,
        f"wall time {result.timings['total_s']:.1f} s (simulate {result.timings['plan_s']:.1f} s, "
        f"post {result.timings.get('post_s', 0):.1f} s, drain {result.timings.get('drain_s', 0):.1f} s)",
    ])


@click.group(context_settings={"auto_envvar_prefix": "SCENARIOS", "help_option_names": ["-h", "--help"]})
def main() -> None:
    """Declarative loss/reorder scenarios run end to end through the real collector."""


@main.command()
@click.argument("files", nargs=-1, required=True)
@click.option("--json", "json_out", type=click.Path(dir_okay=False), help="Write the results as JSON here.")
@click.option("--quiet", is_flag=True, help="No progress bar; print only the tables.")
@click.option("--keep", type=click.Path(file_okay=False), help="Keep each run's database and logs under DIR/<name>.")
def run(files: tuple[str, ...], json_out: str | None, quiet: bool, keep: str | None) -> None:
    """Run scenario FILES (paths, or names of shipped scenarios) and check their expectations.

    Exits 1 when any expectation fails, 2 on a bad file.
    """
    from scenarios.runner import RunError, run_scenario

    if json_out:  # refused now, not after the whole run
        try:
            with open(json_out, "a", encoding="utf-8"):
                pass
        except OSError as e:
            raise click.UsageError(f"cannot write --json {json_out!r}: {e.strerror or e}") from None
    scenarios: list[Scenario] = []
    for f in files:
        try:
            scenarios.append(load_scenario(resolve(f)))
        except ScenarioError as e:
            raise click.UsageError(str(e)) from None
    results = []
    t0 = time.monotonic()
    failed = 0
    for sc in scenarios:
        bar = ProgressBar(sc.name, not quiet)
        try:
            res = run_scenario(sc, workdir=Path(keep).resolve() / sc.name if keep else None, progress=bar)
        except RunError as e:
            bar.done()
            click.echo(f"\n== {sc.name}: ERROR\n{e}")
            failed += 1
            results.append({"name": sc.name, "path": sc.path, "passed": False, "error": str(e)})
            continue
        bar.done()
        click.echo(f"\n== {sc.name}: {'passed' if res.passed else 'FAILED'}  ({sc.path})")
        if sc.description:
            click.echo(sc.description.strip())
        click.echo(summary(res))
        click.echo(expectation_table(res))
        if not res.passed:
            failed += 1
            for m in res.details.get("mismatches", [])[:5]:
                click.echo(f"  mismatch: {m}")
            for m in res.details.get("missing_documents", [])[:5]:
                click.echo(f"  missing: {m}")
            for m in res.details.get("ingest_errors", [])[:5]:
                click.echo(f"  ingest error: {m}")
        results.append(res.to_dict())
    wall = time.monotonic() - t0
    if len(scenarios) > 1:
        click.echo(f"\n{len(scenarios) - failed}/{len(scenarios)} scenarios passed in {wall:.1f} s")
    if json_out:
        Path(json_out).write_text(json.dumps({"wall_s": round(wall, 3), "scenarios": results}, indent=1) + "\n",
                                  encoding="utf-8")
    sys.exit(1 if failed else 0)


@main.command("list")
def list_() -> None:
    """List the shipped scenario files."""
    for p in shipped_files():
        try:
            sc = load_scenario(p)
            first = sc.description.strip().splitlines()[0] if sc.description.strip() else ""
            click.echo(f"{p.stem:<24} {first}")
        except ScenarioError as e:
            click.echo(f"{p.stem:<24} INVALID: {e}")


@main.command()
@click.argument("files", nargs=-1, required=True)
def check(files: tuple[str, ...]) -> None:
    """Check scenario FILES without running them."""
    bad = 0
    for f in files:
        try:
            sc = load_scenario(resolve(f))
            click.echo(f"{sc.name}: ok ({len(sc.expect)} expectations)")
        except ScenarioError as e:
            click.echo(str(e), err=True)
            bad += 1
    sys.exit(2 if bad else 0)


if __name__ == "__main__":
    main()
