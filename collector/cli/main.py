"""The ``collector`` command: the service and the tools around it."""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys

import click

from collector.core import lorawan, wire, wire2
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


def _v2_fits(lines: list[tuple[int, bytes]]) -> str | None:
    """Why these uplinks (one msg_id) cannot be one v2 message, or None."""
    head: wire2.V2Fragment | None = None
    for n, payload in lines:
        try:
            f = wire2.parse_v2(payload)
        except wire.FragmentError as e:
            return f"line {n}: invalid v2 uplink: {e.detail}"
        if isinstance(f, wire2.V2Fragment):
            why = wire2.check_consistent(head, f) if head else None
            if why:
                return f"line {n}: v2 header contradicts an earlier line: {why}"
            head = head or f
    return None


def _v1_fits(lines: list[tuple[int, bytes]]) -> str | None:
    for n, payload in lines:
        try:
            wire.parse_fragment(payload)
        except wire.FragmentError as e:
            return f"line {n}: invalid fragment: {e.detail}"
    return None


def _rebuilds(lines: list[tuple[int, bytes]]) -> bool:
    frags = [f for _, p in lines if isinstance(f := wire2.parse_v2(p), wire2.V2Fragment)]
    try:
        wire.decode_record(wire2.rebuild_record(frags))
    except (wire.WireError, ValueError):
        return False
    return True


def wire_of(lines: list[tuple[int, bytes]]) -> int:
    """Which wire format the uplinks of one msg_id follow, when nothing says: the
    one they parse as (v2: with consistent k/pad/S); when both fit, v2 if they
    rebuild a valid record, else v1. UsageError when neither fits."""
    v2_why, v1_why = _v2_fits(lines), _v1_fits(lines)
    if not v2_why and all(isinstance(wire2.parse_v2(p), wire2.V2Poll) for _, p in lines):
        return 2  # only polls: index 255 is no v1 fragment (its index is below count <= 255)
    if v2_why and v1_why:
        raise click.UsageError(f"{v1_why}; read as wire format v2, {v2_why}")
    if v1_why:
        return 2
    if v2_why:
        return 1
    return 2 if _rebuilds(lines) else 1


@cli.command()
@click.argument("source", type=click.File("r"), default="-")
@click.option("--dev-eui", default=EXAMPLE_DEV_EUI, show_default=True, help="DevEUI the fragments came from.")
@click.option("--wire", "wire_name", type=click.Choice(["auto", "v1", "v2"]), default="auto", show_default=True,
              help="Wire format of the input; auto decides per msg_id.")
@click.option("--fport", type=click.IntRange(1, 223),
              help="v1 only: the FPort the v1 fragments came on (default 16; an application port, 1..223).")
@click.option("--json", "as_json", is_flag=True, help="Print each outcome as JSON instead of the XML document.")
def decode(source, dev_eui: str, wire_name: str, fport: int | None, as_json: bool) -> None:
    """Reassemble fragments and print the XML document, or the incident.

    SOURCE holds one uplink payload per line, hex or base64, in any order, duplicates
    allowed (default: standard input; '#' starts a comment). Wire format v1 and v2
    (coded fragments: any k of them rebuild the record; polls are skipped) are told
    apart per msg_id unless --wire says. Exit code: 0 when every message gave a
    document, 1 when one gave an incident (or only its poll arrived), 2 for bad input.
    """
    if not _EUI.match(dev_eui):
        raise click.BadParameter(f"{dev_eui!r} is not 16 hex digits", param_hint="--dev-eui")
    v1_port = wire.FPORT if fport is None else fport
    if v1_port == wire2.FPORT_V2:
        raise click.BadParameter(f"{v1_port} is the v2 port; use --wire v2", param_hint="--fport")
    settings = Settings(message_timeout=1.0, deadline_policy="fixed", fport=v1_port)
    lines: list[tuple[int, bytes]] = []
    for n, line in enumerate(source, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        try:
            lines.append((n, parse_payload_line(line)))
        except ValueError as e:
            raise click.UsageError(f"line {n}: {e}: {line[:40]!r}") from None
    if not lines:
        raise click.UsageError("no fragments in the input")
    ports: dict[int, int] = {}
    if wire_name == "auto":
        groups: dict[int, list[tuple[int, bytes]]] = {}
        for n, payload in lines:
            groups.setdefault(payload[0] if payload else -1, []).append((n, payload))
        ports = {msg_id: (wire2.FPORT_V2 if wire_of(g) == 2 else v1_port) for msg_id, g in groups.items()}
    r = Reassembler(settings)
    closed = []
    polled: dict[int, wire2.V2Poll] = {}
    fed: set[int] = set()
    for seen, (n, payload) in enumerate(lines):
        port = ports.get(payload[0] if payload else -1) or (wire2.FPORT_V2 if wire_name == "v2" else v1_port)
        if port == wire2.FPORT_V2 and len(payload) == 4 and payload[1] == wire2.POLL:
            polled.setdefault(payload[0], wire2.V2Poll(payload[0], payload[2], payload[3]))
        else:
            fed.add(payload[0])
        up = Uplink(dev_eui.upper(), port, payload, received_ms=seen)
        try:
            res = r.feed(up, now=0.0)
        except wire.FragmentError as e:
            raise click.UsageError(f"line {n}: invalid {'v2 uplink' if port == wire2.FPORT_V2 else 'fragment'}: "
                                   f"{e.detail}") from None
        if res.status == "ignored":
            raise click.UsageError(f"line {n}: {res.reason}")
        closed.extend(res.closed)
    closed.extend(r.expire(float("inf")))
    incidents = 0
    for msg_id in sorted(set(polled) - fed):
        p = polled[msg_id]
        incidents += 1
        click.echo(f"message {msg_id}: only its poll arrived (v2, k={p.k}, sent={p.sent}): "
                   f"no fragment to decode", err=True)
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
@click.option("--wire", "wire_name", type=click.Choice(["v1", "v2"]), default="v1", show_default=True,
              help="Wire format: v1 (FPort 16) or v2 (FPort 17, coded fragments).")
@click.option("--parity", type=click.IntRange(0, 253),
              help="v2: parity rows sent after the k data fragments (default 2).")
@click.option("--poll", is_flag=True, help="v2: end with the poll the device sends after its fragments.")
def encode(record_json, example: bool, size: int | None, region: str | None, dr: int | None,
           msg_id: int, fmt: str, wire_name: str, parity: int | None, poll: bool) -> None:
    """Encode a record (JSON, as `collector example-record` prints it) into fragments, one per line.

    The fragment size comes from --size, or from --region and --dr (the data rate's
    maximum payload N). With --wire v2 the lines are the k data fragments, then
    --parity parity rows (any k of them rebuild the record), then with --poll the poll.
    """
    if example == (record_json is not None):
        raise click.UsageError("give either a RECORD_JSON file or --example")
    if wire_name == "v1" and (parity is not None or poll):
        raise click.UsageError("--parity and --poll need --wire v2")
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
        if wire_name == "v2":
            r = 2 if parity is None else parity
            frags = wire2.encode_message(data, msg_id, size, r)
            k = len(frags) - r
            summary = f"{len(data)}-byte record, v2: {k} data + {r} parity fragment(s) of {size} bytes"
            if poll:
                frags.append(wire2.poll(msg_id, k, len(frags)))
        else:
            frags = wire.fragment(msg_id, data, size)
            summary = f"{len(data)}-byte record, {len(frags)} fragment(s) of at most {size} bytes"
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    for f in frags:
        click.echo(f.hex() if fmt == "hex" else base64.b64encode(f).decode())
    click.echo(summary, err=True)


@cli.command("example-record")
def example_record_cmd() -> None:
    """Print the built-in example record as JSON (a template for `collector encode`)."""
    click.echo(json.dumps(wire.record_to_dict(example_record()), indent=2))


def _register_service_commands() -> None:
    """The service's commands live in their own module."""
    from collector.cli import repair_cmds
    from collector.cli import service_cmds as cli_service

    cli_service.register(cli)
    repair_cmds.register(cli)


_register_service_commands()
main = cli
