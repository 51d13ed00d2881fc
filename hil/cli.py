"""``hil``: talk to a LoRa module (or its emulator) on a serial port.

Settings come from flags, then ``HIL_<COMMAND>_<OPTION>`` environment variables,
then the ``[<command>]`` tables of a TOML file given with ``--config``.
"""

from __future__ import annotations

import logging
import sys
import time

import click

from collector.core import wire
from collector.service.logs import setup_logging
from collector.testing.progress import ProgressBar
from collector.tomlconfig import ConfigError, check_keys, read_toml, table
from hil import bench, bench_v2, p2p
from hil.cli_common import (
    Interrupted,
    fail,
    key_options,
    module_option,
    open_modem,
    port_option,
    sub_band_option,
    timeout_options,
    timeouts,
)
from hil.cli_emulate import emulate
from hil.drivers.modem import Credentials, ModemError, Timeouts
from hil.drivers.rn2483 import RN2483

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
        fail(e)
    for key, value in info.rows():
        click.echo(f"{key}: {value}")


@main.command()
@port_option
@module_option(required=False)
@click.option("--mode", type=click.Choice(["otaa", "abp"]), default="otaa", show_default=True)
@sub_band_option
@key_options
@timeout_options
def join(port, module, mode, sub_band, dev_eui, app_eui, app_key, command_timeout, join_timeout, tx_timeout) -> None:
    """Join the network (OTAA by default) with the module on PORT."""
    creds = Credentials(dev_eui, app_eui, app_key)
    try:
        modem = open_modem(module, port, credentials=creds,
                           timeouts=timeouts(command_timeout, join_timeout, tx_timeout))
        with modem:
            modem.probe()
            if sub_band is not None:
                modem.set_sub_band(sub_band)
            modem.join(mode)
    except (ModemError, ValueError) as e:
        fail(e)
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
@click.option("--wire", "wire_version", type=click.Choice(["v1", "v2"]), default="v1", show_default=True,
              help="v1: fragments on FPort 16; v2: coded fragments, polls and repair on FPort 17.")
@click.option("--parity", default=2, show_default=True, type=click.IntRange(0, 32),
              help="v2: parity rows sent with every message.")
@click.option("--polls", default=3, show_default=True, type=click.IntRange(1, 255), help="v2: polls per round.")
@click.option("--rounds", default=3, show_default=True, type=click.IntRange(0, 255),
              help="v2: repair rounds (NEEDs) served per message.")
@click.option("--poll-interval", default=5.0, show_default=True, type=click.FloatRange(0),
              help="v2: seconds between two polls of a message (time for the answer to be queued).")
@sub_band_option
@key_options
@timeout_options
def send_records(port, module, count, dr, samples, first_msg_id, seed, do_join, collector, token, verify_timeout,
                 p2p_mode, sf, wire_version, parity, polls, rounds, poll_interval, sub_band, dev_eui, app_eui, app_key,
                 command_timeout, join_timeout, tx_timeout) -> None:
    """Generate COUNT records, fragment each at the current DR's N, send them and
    (with --collector) check what the collector made of each."""
    if p2p_mode and wire_version == "v2":
        raise click.UsageError("--p2p sends v1 fragments; leave out --wire v2")
    now = int(time.time())
    seed = now if seed is None else seed
    msg_id = (now % 256) if first_msg_id is None else first_msg_id
    creds = Credentials(dev_eui, app_eui, app_key)
    sent: list[bench.SentMessage] = []
    failed = False
    try:
        modem = open_modem(module, port, credentials=creds,
                           timeouts=timeouts(command_timeout, join_timeout, tx_timeout))
    except ModemError as e:
        fail(e)
    with modem:
        try:
            info = modem.probe()
            eui = info.dev_eui
            if p2p_mode:
                if not isinstance(modem, RN2483):
                    raise click.ClickException("--p2p needs an RN2483/RN2903 (radio tx)")
                p2p.prepare_radio(modem, sf)
            else:
                if sub_band is not None:
                    modem.set_sub_band(sub_band)
                if do_join:
                    click.echo(f"joining as {eui} ...", err=True)
                    modem.join()
                if dr is not None:
                    modem.set_dr(dr)
        except (ModemError, ValueError) as e:
            fail(e)
        serial_no = int(eui, 16) & 0xFFFFFFFF
        mid = msg_id
        if wire_version == "v2":
            records = [wire.encode_record(bench.make_record(serial_no, i, samples=samples, start_time=now, seed=seed))
                       for i in range(count)]
            settings = bench_v2.V2Settings(parity=parity, polls=polls, rounds=rounds, poll_interval=poll_interval)
            try:
                sent, device = bench_v2.send_records_v2(modem, records, msg_id, settings)
            except (ModemError, ValueError) as e:
                fail(e)
            click.echo(f"v2: {device.stats.data_sent} data, {device.stats.parity_sent} parity, "
                       f"{device.stats.repair_sent} repair fragment(s), {device.stats.polls_sent} poll(s), "
                       f"{device.stats.acked} ACK(s), {device.stats.given_up} given up", err=True)
            failed = not collector and any(s.status != "acked" for s in sent)
            count = 0  # nothing more to send below
        for i in range(count):
            rec = wire.encode_record(bench.make_record(serial_no, i, samples=samples, start_time=now, seed=seed))
            t0 = time.monotonic()
            bar = ProgressBar(f"record {i + 1}/{count}")

            def progress(done: int, total: int, bar: ProgressBar = bar) -> None:
                bar(done / total, f"fragment {done}/{total}")

            try:
                if p2p_mode:
                    n = p2p.send_record_p2p(modem, eui, mid, rec, progress=progress)
                    size = p2p.MAX_FRAGMENT - p2p.EUI_LEN
                    s = bench.SentMessage(mid, i, len(rec), size, n, -1, seconds=time.monotonic() - t0,
                                          record=rec, payloads=wire.fragment(mid, rec, size), first_msg_id=mid)
                else:
                    s = bench.send_record(modem, mid, rec, progress=progress)
                    s.record_seq = i
            except (ModemError, ValueError) as e:
                s = bench.SentMessage(mid, i, len(rec), 0, 0, -1, status=f"error: {e}")
                failed = True
            bar.done()
            # a record restarted after a DR drop used more than one msg_id: never reuse one
            mid = s.next_msg_id
            sent.append(s)
            if failed:
                break
    if collector:
        click.echo(f"verifying at {collector} ...", err=True)
        try:
            rebuild = bench_v2.rebuild_v2 if wire_version == "v2" else bench.rebuild_v1
            bench.verify(collector, eui, sent, token=token, deadline_s=verify_timeout, rebuild=rebuild)
        except bench.ApiError as e:
            click.echo(bench.table(sent, with_collector=False))
            fail(e)
        click.echo(bench.table(sent, with_collector=True))
        for s in sent:
            if s.status in bench.SENT and not bench.verified(s):
                click.echo(f"msg_id {s.msg_id} (record {s.record_seq}): {s.check or 'not verified'}", err=True)
        failed = failed or not all(bench.verified(s) for s in sent)
    else:
        click.echo(bench.table(sent, with_collector=False))
    if failed:
        sys.exit(1)


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
        fail(e)
    with modem, Interrupted() as stop:
        try:
            modem.probe()
            click.echo(f"listening on {port} at SF{sf}, forwarding to {collector}/uplink", err=True)

            def show(d) -> None:
                click.echo(f"{d.body['devEui']} fCnt={d.body.get('fCnt', 0)} -> HTTP {d.status} {d.reply[:80]}")

            n = p2p.run_gateway(modem, collector, sf=sf, token=token, dev_eui=dev_eui, stop=stop,
                                max_frames=max_frames, on_delivery=show)
        except (ModemError, ValueError) as e:
            fail(e)
    click.echo(f"forwarded {n} frame(s)", err=True)


main.add_command(emulate)

if __name__ == "__main__":
    main()
