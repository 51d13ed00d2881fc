"""``hil``: talk to a LoRa module (or its emulator) on a serial port.

Settings come from flags, then ``HIL_<COMMAND>_<OPTION>`` environment variables,
then the ``[<command>]`` tables of a TOML file given with ``--config``.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time

import click

from collector.core import wire
from collector.service.logs import setup_logging
from collector.testing.progress import ProgressBar
from collector.tomlconfig import ConfigError, check_keys, read_toml, table
from devicesim.formats import FORMATS
from hil import bench, p2p
from hil.emulator import FAULTS, EmulatorConfig, Faults, start_emulator
from hil.modem import Credentials, Modem, ModemError, Timeouts
from hil.rak3172 import RAK3172
from hil.rn2483 import RN2483

MODULE_CHOICE = click.Choice(["rn2483", "rak3172"])
log = logging.getLogger("hil.cli")


def _load_config(ctx: click.Context, _param, path: str | None) -> None:
    """``--config FILE``: one table per command (``[send-records]``) holding its
    options by name; an unknown table or option is an error, not a default skipped."""
    if not path:
        return
    try:
        data = {k.replace("_", "-"): v for k, v in read_toml(path).items()}
        commands = ctx.command.commands  # type: ignore[attr-defined]
        check_keys(data, tables=commands, where=path, known="none (one table per command)")
        default_map = {}
        for name in data:
            options = {k.replace("-", "_"): v for k, v in table(data, name, path).items()}
            check_keys(options, [p.name for p in commands[name].params if p.name], where=f"{path}, [{name}]")
            default_map[name] = options
    except ConfigError as e:
        raise click.BadParameter(str(e)) from None
    ctx.default_map = default_map


@click.group(context_settings={"auto_envvar_prefix": "HIL", "help_option_names": ["-h", "--help"]})
@click.option("--config", type=click.Path(dir_okay=False), callback=_load_config, is_eager=True,
              expose_value=False, help="TOML file with one table per command, e.g. [send-records].")
@click.option("--log-level", default="warning", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]), help="Structured log lines on stderr.")
def main(log_level: str) -> None:
    """Drive RN2483/RN2903 and RAK3172 LoRa modules (or their emulators) on a bench."""
    setup_logging(log_level)


# --------------------------------------------------------------------------- shared options


def port_option(f):
    return click.option("--port", required=True, help="Serial port: a device path or a pyserial URL.")(f)


def module_option(required: bool = True):
    return click.option("--module", type=MODULE_CHOICE, required=required,
                        help="Module type (probe detects it when left out).")


def key_options(f):
    f = click.option("--app-key", default=None, help="OTAA AppKey (32 hex) to write before joining.")(f)
    f = click.option("--app-eui", default=None, help="OTAA AppEUI/JoinEUI (16 hex) to write before joining.")(f)
    f = click.option("--dev-eui", default=None, help="DevEUI (16 hex) to write before joining.")(f)
    return f


def timeout_options(f):
    f = click.option("--tx-timeout", default=6.0, show_default=True, type=float,
                     help="Seconds beyond twice the airtime to wait for a transmit's second reply.")(f)
    f = click.option("--join-timeout", default=15.0, show_default=True, type=float,
                     help="Seconds to wait for a join's outcome.")(f)
    f = click.option("--command-timeout", default=2.0, show_default=True, type=float,
                     help="Seconds to wait for a command's first reply.")(f)
    return f


def open_modem(module: str | None, port: str, *, credentials: Credentials | None = None,
               timeouts: Timeouts | None = None) -> Modem:
    """Open ``port`` as ``module``; with None, detect the module type."""
    if module == "rn2483":
        return RN2483(port, credentials=credentials, timeouts=timeouts)
    if module == "rak3172":
        return RAK3172(port, credentials=credentials, timeouts=timeouts)
    detected = detect_module(port)
    if detected is None:
        raise ModemError(f"no RN2483/RN2903 or RAK3172 answered on {port}")
    return open_modem(detected, port, credentials=credentials, timeouts=timeouts)


def detect_module(port: str, timeout: float = 1.0) -> str | None:
    """``rn2483`` when ``sys get ver`` at 57600 baud gets a version line, ``rak3172``
    when ``AT`` at 115200 baud gets ``OK``; None otherwise."""
    from hil.rn2483 import VERSION

    with RN2483(port, timeouts=Timeouts(command=timeout)) as m:
        try:
            if VERSION.match(m.link.command("sys get ver", lambda line: bool(line.strip()), timeout)):
                return "rn2483"
        except ModemError:
            pass
    with RAK3172(port, timeouts=Timeouts(command=timeout)) as m:
        try:
            if m.link.command("AT", {"OK"}, timeout) == "OK":
                return "rak3172"
        except ModemError:
            pass
    return None


def _fail(e: Exception) -> None:
    raise click.ClickException(str(e))


def _timeouts(command_timeout: float, join_timeout: float, tx_timeout: float) -> Timeouts:
    return Timeouts(command=command_timeout, join=join_timeout, tx_base=tx_timeout)


class _Interrupted:
    """SIGINT/SIGTERM set an event so long commands stop cleanly (exit 0)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __enter__(self) -> threading.Event:
        self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self.event

    def _handler(self, signum, frame) -> None:
        self.event.set()

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


# --------------------------------------------------------------------------- commands


@main.command()
@port_option
@module_option(required=False)
@click.option("--command-timeout", default=2.0, show_default=True, type=float, help="Seconds per reply.")
def probe(port: str, module: str | None, command_timeout: float) -> None:
    """Identify the module on PORT and print its settings."""
    try:
        modem = open_modem(module, port, timeouts=Timeouts(command=command_timeout))
        with modem:
            info = modem.probe()
    except (ModemError, ValueError) as e:
        _fail(e)
    for key, value in info.rows():
        click.echo(f"{key}: {value}")


@main.command()
@port_option
@module_option(required=False)
@click.option("--mode", type=click.Choice(["otaa", "abp"]), default="otaa", show_default=True)
@key_options
@timeout_options
def join(port, module, mode, dev_eui, app_eui, app_key, command_timeout, join_timeout, tx_timeout) -> None:
    """Join the network (OTAA by default) with the module on PORT."""
    creds = Credentials(dev_eui, app_eui, app_key)
    try:
        modem = open_modem(module, port, credentials=creds,
                           timeouts=_timeouts(command_timeout, join_timeout, tx_timeout))
        with modem:
            modem.probe()
            modem.join(mode)
    except (ModemError, ValueError) as e:
        _fail(e)
    click.echo("joined")


@main.command("send-records")
@port_option
@module_option(required=True)
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 1000), help="Records to send.")
@click.option("--dr", default=None, type=int, help="Data rate to set before sending (default: keep the module's).")
@click.option("--samples", default=144, show_default=True, type=click.IntRange(1, 255),
              help="Samples per channel (144: a 658-byte record).")
@click.option("--first-msg-id", default=None, type=click.IntRange(0, 255),
              help="msg_id of the first record (default: from the clock).")
@click.option("--seed", default=None, type=int, help="Seed of the record contents (default: from the clock).")
@click.option("--join/--no-join", "do_join", default=True, show_default=True, help="Join before sending.")
@click.option("--collector", default=None, help="Collector base URL; verify each record through its API.")
@click.option("--token", default=None, help="Bearer token for the collector API.")
@click.option("--verify-timeout", default=60.0, show_default=True, type=float,
              help="Seconds to wait for the collector to complete the messages.")
@click.option("--p2p", "p2p_mode", is_flag=True, help="Send as point-to-point frames (RN2483, mac pause + radio tx).")
@click.option("--sf", default=7, show_default=True, type=click.IntRange(7, 12), help="P2P spreading factor.")
@key_options
@timeout_options
def send_records(port, module, count, dr, samples, first_msg_id, seed, do_join, collector, token, verify_timeout,
                 p2p_mode, sf, dev_eui, app_eui, app_key, command_timeout, join_timeout, tx_timeout) -> None:
    """Generate COUNT records, fragment each at the current DR's N, send them and
    (with --collector) check what the collector made of each."""
    now = int(time.time())
    seed = now if seed is None else seed
    msg_id = (now % 256) if first_msg_id is None else first_msg_id
    creds = Credentials(dev_eui, app_eui, app_key)
    sent: list[bench.SentMessage] = []
    failed = False
    try:
        modem = open_modem(module, port, credentials=creds,
                           timeouts=_timeouts(command_timeout, join_timeout, tx_timeout))
    except ModemError as e:
        _fail(e)
    with modem:
        try:
            info = modem.probe()
            eui = info.dev_eui
            if p2p_mode:
                if not isinstance(modem, RN2483):
                    raise click.ClickException("--p2p needs an RN2483/RN2903 (radio tx)")
                p2p.prepare_radio(modem, sf)
            else:
                if do_join:
                    click.echo(f"joining as {eui} ...", err=True)
                    modem.join()
                if dr is not None:
                    modem.set_dr(dr)
        except (ModemError, ValueError) as e:
            _fail(e)
        serial_no = int(eui, 16) & 0xFFFFFFFF
        for i in range(count):
            rec = wire.encode_record(bench.make_record(serial_no, i, samples=samples, start_time=now, seed=seed))
            mid = (msg_id + i) % 256
            t0 = time.monotonic()
            bar = ProgressBar(f"record {i + 1}/{count}")

            def progress(done: int, total: int, bar: ProgressBar = bar) -> None:
                bar(done / total, f"fragment {done}/{total}")

            try:
                if p2p_mode:
                    n = p2p.send_record_p2p(modem, eui, mid, rec, progress=progress)
                    s = bench.SentMessage(mid, i, len(rec), p2p.MAX_FRAGMENT - p2p.EUI_LEN, n, -1,
                                          seconds=time.monotonic() - t0)
                else:
                    s = bench.send_record(modem, mid, rec, progress=progress)
                    s.record_seq = i
            except (ModemError, ValueError) as e:
                s = bench.SentMessage(mid, i, len(rec), 0, 0, -1, status=f"error: {e}")
                failed = True
            bar.done()
            sent.append(s)
            if failed:
                break
    if collector:
        click.echo(f"verifying at {collector} ...", err=True)
        try:
            bench.verify(collector, eui, sent, token=token, deadline_s=verify_timeout)
        except bench.ApiError as e:
            click.echo(bench.table(sent, with_collector=False))
            _fail(e)
        click.echo(bench.table(sent, with_collector=True))
        failed = failed or any(s.collector.get("state") != "complete" for s in sent)
    else:
        click.echo(bench.table(sent, with_collector=False))
    if failed:
        sys.exit(1)


def _parse_faults(values: tuple[str, ...]) -> Faults:
    faults = Faults()
    for v in values:
        name, _, n = v.partition("=")
        try:
            faults.inject(name, int(n) if n else 1)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--fault") from None
    return faults


@main.command()
@click.argument("module", type=MODULE_CHOICE)
@click.option("--region", type=click.Choice(["EU868", "US915"], case_sensitive=False), default="EU868",
              show_default=True, help="EU868 (RN2483 / band 4) or US915 (RN2903 / band 5).")
@click.option("--speed", default=1.0, show_default=True, type=click.FloatRange(0),
              help="Scale of airtimes and RX windows; 0 answers at once.")
@click.option("--duty-cycle/--no-duty-cycle", default=True, show_default=True, help="Enforce the duty cycle.")
@click.option("--dev-eui", default="0004A30B001C0530", show_default=True, help="The module's DevEUI.")
@click.option("--dr", default=None, type=int, help="Initial data rate.")
@click.option("--forward-to", default=None, help="Collector base URL to POST each transmitted uplink to.")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="generic", show_default=True,
              help="The network server format of the forwarded uplinks.")
@click.option("--token", default=None, help="Bearer token for --forward-to.")
@click.option("--ns-latency", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Network server to application delay of each forwarded uplink, seconds.")
@click.option("--ns-jitter", default=0.0, show_default=True, type=click.FloatRange(0),
              help="Mean of an exponential extra delay per uplink, seconds (reorders uplinks).")
@click.option("--ns-duplicates", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Probability that an uplink is delivered twice (1 s + exp(20 s) later).")
@click.option("--ns-seed", default=0, show_default=True, type=int, help="Seed of the network server's draws.")
@click.option("--fault", "faults", multiple=True, metavar="NAME[=N]",
              help=f"Inject a fault N times (default 1): {', '.join(FAULTS)}.")
def emulate(module, region, speed, duty_cycle, dev_eui, dr, forward_to, fmt, token, ns_latency, ns_jitter,
            ns_duplicates, ns_seed, faults) -> None:
    """Emulate MODULE on a pseudo-terminal: prints its path on the first line, then
    serves until interrupted (Ctrl-C / SIGTERM)."""
    from devicesim.network import NetworkServer
    from hil.bridge import Forwarder, network_config

    config = EmulatorConfig(region=region.upper(), speed=speed, duty_cycle=duty_cycle, dev_eui=dev_eui, dr=dr)
    ns = NetworkServer(network_config(latency_s=ns_latency, jitter_s=ns_jitter, duplicate_p=ns_duplicates),
                       seed=ns_seed)
    forwarder = Forwarder(forward_to, fmt, token=token, network_server=ns) if forward_to else None
    with _Interrupted() as stop:
        emu = start_emulator(module, config, on_tx=forwarder.submit if forwarder else None,
                             faults=_parse_faults(faults))
        click.echo(emu.path)
        sys.stdout.flush()
        log.info("event=emulating module=%s region=%s path=%s forward_to=%s", module, region, emu.path, forward_to)
        while not stop.wait(0.5):
            pass
        emu.stop()
    if forwarder:
        forwarder.close()


@main.command()
@port_option
@click.option("--collector", required=True, help="Collector base URL (frames go to {URL}/uplink).")
@click.option("--token", default=None, help="Bearer token for the collector.")
@click.option("--sf", default=7, show_default=True, type=click.IntRange(7, 12), help="Spreading factor to listen on.")
@click.option("--dev-eui", default=None,
              help="Take frames as bare fragments of this device (default: frames start with the 8-byte DevEUI).")
@click.option("--max-frames", default=None, type=int, help="Stop after forwarding this many frames.")
def gateway(port, collector, token, sf, dev_eui, max_frames) -> None:
    """Point-to-point receiver: an RN2483/RN2903 on PORT in `radio rx` forwards what it
    hears to the collector's own format."""
    try:
        modem = RN2483(port)
    except ModemError as e:
        _fail(e)
    with modem, _Interrupted() as stop:
        try:
            modem.probe()
            click.echo(f"listening on {port} at SF{sf}, forwarding to {collector}/uplink", err=True)

            def show(d) -> None:
                click.echo(f"{d.body['devEui']} fCnt={d.body.get('fCnt', 0)} -> HTTP {d.status} {d.reply[:80]}")

            n = p2p.run_gateway(modem, collector, sf=sf, token=token, dev_eui=dev_eui, stop=stop,
                                max_frames=max_frames, on_delivery=show)
        except (ModemError, ValueError) as e:
            _fail(e)
    click.echo(f"forwarded {n} frame(s)", err=True)


if __name__ == "__main__":
    main()
