"""``devicesim`` command line: ``run`` a simulation, ``airtime`` answers.

Settings come from a TOML file (``--config``), then environment variables
``DEVICESIM_RUN_<OPTION>`` (e.g. ``DEVICESIM_RUN_SEED=7``), then flags.
"""

from __future__ import annotations

import logging
import sys
import time

import click

from collector.core.lorawan import message_airtime, min_message_duration
from collector.core.lorawan import region as lookup_region
from collector.core.wire import fragment_lengths
from collector.service.logs import setup_logging
from collector.testing.progress import ProgressBar
from devicesim.config import ConfigError, SimConfig, load_config
from devicesim.dutycycle import message_duration
from devicesim.formats import FORMATS

log = logging.getLogger("devicesim")


def _log(event: str, **fields) -> None:
    """One line in the project's log format: ``... event=<event> key=value ...``."""
    log.info("event=%s %s", event, " ".join(
        f"{k}={v!r}" if isinstance(v, str) and (not v or " " in v) else f"{k}={v}" for k, v in fields.items()))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "auto_envvar_prefix": "DEVICESIM"})
def main() -> None:
    """Simulate LoRaWAN devices, radio, gateways and network server; write what the
    application receives (exact network-server JSON) plus ground truth."""
    setup_logging("INFO")


def _int(value: str, name: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name}: {value!r} is neither a number nor 'adaptive'") from None


def _dr_option(value: str | None):
    if value is None:
        return None
    if value.lower() in ("adr",):
        return "adr"
    try:
        return int(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is neither a data-rate index nor 'adr'") from None


@main.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="TOML configuration file.")
@click.option("--region", help="Region: EU868, US915, AU915, AS923-1..4.")
@click.option("--devices", type=int, help="Number of devices.")
@click.option("--hours", type=float, help="Simulated duration in hours.")
@click.option("--seed", type=int, help="Seed of every random stream.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), help="Uplink body format.")
@click.option("--out", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the JSON-lines trace here ('-' for standard output).")
@click.option("--dr", "dr", help="Fixed data-rate index, or 'adr' (choice from link margin).")
@click.option("--loss", type=click.Choice(["physical", "bernoulli", "gilbert"]), help="Channel model.")
@click.option("--loss-p", type=float, help="Loss probability of the bernoulli model.")
@click.option("--gateways", type=int, help="Number of gateways.")
@click.option("--jitter", type=float, help="Mean network-server-to-application delivery jitter (s).")
@click.option("--duplicates", type=float, help="Probability an uplink is delivered twice.")
@click.option("--every", type=float, help="Send a record every N minutes instead of daily.")
@click.option("--reboots-per-day", type=float, help="Expected random reboots per device per day.")
@click.option("--wire", type=click.Choice(["v1", "v2"]), help="Wire format of every device (v2: the closed loop).")
@click.option("--parity", help="v2 parity rows per message (0-32) or 'adaptive'.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def run(config_path, region, devices, hours, seed, fmt, out, dr, loss, loss_p, gateways, jitter, duplicates,
        every, reboots_per_day, wire, parity, quiet) -> None:
    """Run a simulation, print a summary table and optionally write the trace."""
    from devicesim.sim import simulate
    from devicesim.trace import write_trace

    try:
        cfg = load_config(config_path) if config_path else SimConfig()
        if region is not None:
            cfg.region = region
        if devices is not None:
            cfg.devices.count = devices
        if hours is not None:
            cfg.hours = hours
        if seed is not None:
            cfg.seed = seed
        if fmt is not None:
            cfg.format = fmt
        d = _dr_option(dr)
        if d == "adr":
            cfg.devices.dr.kind = "adr"
        elif d is not None:
            cfg.devices.dr.kind, cfg.devices.dr.dr = "fixed", d
        if loss is not None:
            cfg.channel.model = loss
        if loss_p is not None:
            cfg.channel.p = loss_p
            if loss is None:
                cfg.channel.model = "bernoulli"
        if gateways is not None:
            cfg.gateways.count = gateways
            cfg.gateways.positions = ()
        if jitter is not None:
            cfg.network.delivery.jitter_s = jitter
        if duplicates is not None:
            cfg.network.duplicate_p = duplicates
        if every is not None:
            cfg.devices.schedule.kind, cfg.devices.schedule.every_min = "every", every
        if reboots_per_day is not None:
            cfg.devices.reboots.per_day = reboots_per_day
        if wire is not None:
            cfg.devices.wire, cfg.devices.groups = wire, ()
        if parity is not None:
            cfg.devices.parity = parity if parity == "adaptive" else _int(parity, "--parity")
        cfg.validate()
    except ConfigError as e:
        raise click.UsageError(str(e)) from None

    t0 = time.perf_counter()
    with ProgressBar("simulating", enabled=not quiet) as bar:
        result = simulate(cfg, progress=bar)
    sim_s = time.perf_counter() - t0
    lines = 0
    if out:
        try:
            lines = write_trace(result, sys.stdout if out == "-" else out)
        except OSError as e:
            raise click.ClickException(f"cannot write trace {out}: {e.strerror}") from None
    click.echo(result.stats.table(), err=out == "-")
    _log("done", devices=cfg.devices.count, hours=cfg.hours, seed=cfg.seed,
         uplinks=result.stats.uplinks_sent, wall_s=round(time.perf_counter() - t0, 3), sim_s=round(sim_s, 3),
         trace=out, trace_lines=lines)


@main.command()
@click.option("--region", default="EU868", show_default=True, help="Region: EU868, US915, AU915, AS923-1..4.")
@click.option("--dr", type=int, required=True, help="Data-rate index.")
@click.option("--bytes", "nbytes", type=int, required=True, help="Record length in bytes.")
@click.option("--size", type=int, help="Fragment size S (default: the DR's maximum payload N).")
def airtime(region, dr, nbytes, size) -> None:
    """Fragments, time on air and the shortest duration of one record's message."""
    try:
        reg = lookup_region(region)
        rate = reg.dr(dr)
        s = size or rate.max_payload
        if s > rate.max_payload:
            raise ValueError(f"fragment size {s} exceeds N={rate.max_payload} at {reg.name} DR{dr}")
        if nbytes < 1:
            raise ValueError("--bytes must be >= 1")
        count, total = message_airtime(rate, nbytes, s)
        lengths = fragment_lengths(nbytes, s)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    dc = reg.duty_cycle()
    t_full = rate.time_on_air(lengths[0])
    rows = [
        ("region / DR", f"{reg.name} DR{dr} ({rate.name}), N={rate.max_payload}"),
        ("record bytes", f"{nbytes}"),
        ("fragment size S", f"{s}"),
        ("fragments", f"{count}" + ("  (more than 255: cannot be sent)" if count > 255 else "")),
        ("time on air, one full fragment", f"{t_full * 1000:.3f} ms"),
        ("time on air, whole message", f"{total:.3f} s"),
        ("duty cycle", f"{dc:.1%}" if dc < 1 else "none"),
        ("minimum message duration",
         f"{message_duration([rate.time_on_air(n) for n in lengths], dc):.1f} s (off-time rule alone: "
         f"{min_message_duration(rate, count, s, dc, last=lengths[-1]):.1f} s)"),
    ]
    if reg.dwell_time_s is not None:
        ok = t_full <= reg.dwell_time_s
        rows.append(("dwell time limit", f"{reg.dwell_time_s * 1000:.0f} ms ({'ok' if ok else 'EXCEEDED'})"))
    w = max(len(a) for a, _ in rows)
    for a, b in rows:
        click.echo(f"{a:<{w}}  {b}")


if __name__ == "__main__":  # pragma: no cover
    main()
