"""The ``collector`` command: the service and the tools around it."""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys

import click

from collector.core import lorawan, wire
from collector.core.assemble import assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink
from collector.testing.examples import EXAMPLE_DEV_EUI, example_record

_HEX = re.compile(r"^(?:[0-9a-fA-F]{2})+\Z")
_EUI = re.compile(r"^[0-9a-fA-F]{16}\Z")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lora-collector")
def cli() -> None:
    """lora-collector: reassembles fragmented LoRaWAN uplinks into the Web App's XML
    documents and delivers them."""


def parse_payload_line(line: str) -> bytes:
    """A fragment written as hex (``11000e01...``, spaces allowed) or base64."""
    text = line.strip()
    compact = text.replace(" ", "").replace(":", "")
    if _HEX.match(compact):
        return bytes.fromhex(compact)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("neither hex nor base64") from None


@cli.command()
@click.argument("source", type=click.File("r"), default="-")
@click.option("--dev-eui", default=EXAMPLE_DEV_EUI, show_default=True, help="DevEUI the fragments came from.")
@click.option("--fport", default=wire.FPORT, show_default=True, type=click.IntRange(1, 223),
              help="FPort the fragments came on (an application port, 1..223).")
@click.option("--json", "as_json", is_flag=True, help="Print each outcome as JSON instead of the XML document.")
def decode(source, dev_eui: str, fport: int, as_json: bool) -> None:
    """Reassemble fragments and print the XML document, or the incident.

    SOURCE holds one fragment per line, hex or base64, in any order, duplicates
    allowed (default: standard input; '#' starts a comment). Exit code: 0 when every
    message gave a document, 1 when one gave an incident, 2 for bad input.
    """
    if not _EUI.match(dev_eui):
        raise click.BadParameter(f"{dev_eui!r} is not 16 hex digits", param_hint="--dev-eui")
    r = Reassembler(Settings(message_timeout=1.0, deadline_policy="fixed"))
    closed = []
    seen = 0
    for n, line in enumerate(source, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            payload = parse_payload_line(line)
        except ValueError as e:
            raise click.UsageError(f"line {n}: {e}: {line[:40]!r}") from None
        up = Uplink(dev_eui.upper(), fport, payload, received_ms=seen)
        try:
            res = r.feed(up, now=0.0)
        except wire.FragmentError as e:
            raise click.UsageError(f"line {n}: invalid fragment: {e.detail}") from None
        if res.status == "ignored":
            raise click.UsageError(f"line {n}: {res.reason}")
        closed.extend(res.closed)
        seen += 1
    if not seen:
        raise click.UsageError("no fragments in the input")
    closed.extend(r.expire(float("inf")))
    incidents = 0
    for m in closed:
        out = assemble(m)
        if out.kind == "incident":
            incidents += 1
            if as_json:
                click.echo(json.dumps(out.to_dict(), indent=2))
            else:
                missing = " ".join(map(str, out.missing_fragments)) or "none known"
                click.echo(f"incident: message {out.msg_id}: {out.code}: {out.detail}", err=True)
                click.echo(f"  fragments held: {' '.join(str(f['index']) for f in out.fragments)}; "
                           f"missing: {missing}", err=True)
        elif as_json:
            d = out.to_dict()
            d["xml"] = out.xml.decode()
            click.echo(json.dumps(d, indent=2))
        else:
            click.echo(out.xml.decode(), nl=False)
            if not out.complete:
                click.echo(f"note: message {out.msg_id} is partial: fragments missing "
                           f"{out.missing_fragments}, blocks missing {out.missing_blocks or 'none'}", err=True)
    sys.exit(1 if incidents else 0)


@cli.command()
@click.argument("record_json", type=click.File("r"), required=False)
@click.option("--example", is_flag=True, help="Encode the built-in 658-byte example record.")
@click.option("--size", type=click.IntRange(wire.MIN_SIZE, wire.MAX_SIZE), help="Fragment size S in bytes.")
@click.option("--region", type=click.Choice(sorted(lorawan.REGIONS), case_sensitive=False),
              help="Region whose data rate sets S (with --dr).")
@click.option("--dr", type=int, help="Data rate index whose maximum payload N sets S.")
@click.option("--msg-id", default=0, show_default=True, type=click.IntRange(0, 255))
@click.option("--format", "fmt", type=click.Choice(["hex", "base64"]), default="hex", show_default=True)
def encode(record_json, example: bool, size: int | None, region: str | None, dr: int | None,
           msg_id: int, fmt: str) -> None:
    """Encode a record (JSON, as `collector example-record` prints it) into fragments, one per line.

    The fragment size comes from --size, or from --region and --dr (the data rate's
    maximum payload N).
    """
    if example == (record_json is not None):
        raise click.UsageError("give either a RECORD_JSON file or --example")
    if size is None:
        if region is None or dr is None:
            raise click.UsageError("give --size, or --region and --dr")
        try:
            size = lorawan.max_payload(region, dr)
        except ValueError as e:
            raise click.UsageError(str(e)) from None
    if example:
        rec = example_record()
    else:
        try:
            rec = wire.record_from_dict(json.load(record_json))
        except json.JSONDecodeError as e:
            raise click.UsageError(f"{record_json.name}: not JSON: {e}") from None
        except ValueError as e:
            raise click.UsageError(f"{record_json.name}: {e}") from None
    try:
        data = wire.encode_record(rec)
        frags = wire.fragment(msg_id, data, size)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for f in frags:
        click.echo(f.hex() if fmt == "hex" else base64.b64encode(f).decode())
    click.echo(f"{len(data)}-byte record, {len(frags)} fragment(s) of at most {size} bytes", err=True)


@cli.command("example-record")
def example_record_cmd() -> None:
    """Print the built-in example record as JSON (a template for `collector encode`)."""
    click.echo(json.dumps(wire.record_to_dict(example_record()), indent=2))


def _register_service_commands() -> None:
    """The service's commands live in their own module."""
    from collector.cli import service_cmds as cli_service

    cli_service.register(cli)


_register_service_commands()
main = cli
