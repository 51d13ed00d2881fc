"""``hil emulate``: an emulated module on a pseudo-terminal, optionally forwarding
its uplinks to a collector and taking its downlinks from a network server."""

from __future__ import annotations

import logging
import sys

import click

from devicesim.formats import FORMATS
from hil.cli_common import MODULE_CHOICE, Interrupted
from hil.emulator import FAULTS, EmulatorConfig, Faults, start_emulator

log = logging.getLogger("hil.cli")


def _parse_faults(values: tuple[str, ...]) -> Faults:
    faults = Faults()
    for v in values:
        name, _, n = v.partition("=")
        try:
            faults.inject(name, int(n) if n else 1)
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--fault") from None
    return faults


@click.command()
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
@click.option("--sub-band", default=2, show_default=True, type=click.IntRange(0, 8),
              help="US915: the sub-band the module starts with enabled; 0: all 72 channels (factory state).")
@click.option("--downlinks-from", default=None, metavar="URL",
              help="Stand-in network server to take the module's queued downlinks from "
                   "(collector netserver-stub); each goes down in the RX window after the next uplink.")
@click.option("--downlink-key", default="NNSXS.bench", show_default=True,
              help="With --format ttn and --downlinks-from: the downlink API key the webhook carries.")
@click.option("--loss", default=0.0, show_default=True, type=click.FloatRange(0, 1),
              help="Probability that the bench gateway does not hear an uplink.")
@click.option("--loss-seed", default=0, show_default=True, type=int, help="Seed of the --loss draws.")
@click.option("--air", "air_dir", default=None, metavar="DIR",
              help="Directory shared by the emulators whose point-to-point frames reach each other "
                   "(default: one per user in the temporary directory).")
def emulate(module, region, speed, duty_cycle, dev_eui, dr, forward_to, fmt, token, ns_latency, ns_jitter,
            ns_duplicates, ns_seed, faults, downlinks_from, downlink_key, loss, loss_seed, sub_band, air_dir) -> None:
    """Emulate MODULE on a pseudo-terminal: prints its path on the first line, then
    serves until interrupted (Ctrl-C / SIGTERM)."""
    from devicesim.network import NetworkServer
    from hil.bridge import Forwarder, network_config
    from hil.downlinks import DownlinkPuller, tts_headers
    from hil.emulator.air import SocketAir, default_directory
    from hil.emulator.channels import sub_band_frequencies

    config = EmulatorConfig(region=region.upper(), speed=speed, duty_cycle=duty_cycle, dev_eui=dev_eui, dr=dr,
                            sub_band=sub_band or None)
    try:
        air = SocketAir(air_dir or default_directory())
    except OSError as e:
        raise click.BadParameter(f"cannot use {air_dir or default_directory()} for the air: {e}",
                                 param_hint="--air") from None
    ns = NetworkServer(network_config(latency_s=ns_latency, jitter_s=ns_jitter, duplicate_p=ns_duplicates),
                       seed=ns_seed)
    headers = None
    if downlinks_from and fmt == "ttn":
        def headers(eui: str) -> dict[str, str]:
            return tts_headers(downlinks_from, eui, downlink_key)
    # the bench gateway listens on US915 sub-band 2, as TTS and most US networks
    channels = sorted(sub_band_frequencies(2)) if region.upper() == "US915" else None
    forwarder = Forwarder(forward_to, fmt, token=token, network_server=ns, loss=loss, loss_seed=loss_seed,
                          headers=headers, channels=channels) if forward_to else None
    with Interrupted() as stop:
        emu = start_emulator(module, config, on_tx=forwarder.submit if forwarder else None,
                             faults=_parse_faults(faults), air=air)
        puller = None
        if downlinks_from:
            puller = DownlinkPuller(downlinks_from, dev_eui,
                                    lambda port, data: emu.model.queue_downlink(port, data, replace=True)).start()
        click.echo(emu.path)
        sys.stdout.flush()
        log.info("event=emulating module=%s region=%s path=%s forward_to=%s", module, region, emu.path, forward_to)
        while not stop.wait(0.5):
            pass
        if puller:
            puller.close()
        emu.stop()
    if forwarder:
        forwarder.close()
