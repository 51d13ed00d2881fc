"""``collector netserver-stub`` and the repair picture of ``collector status``."""

from __future__ import annotations

import json

import click

from collector.service import outbox


def repair_lines(query) -> list[str]:
    """The repair picture (wire format v2) for ``collector status``; nothing when no
    v2 device was heard."""
    c = outbox.counts(query)
    if not c["devices"]:
        return []
    rs: dict[str, int] = {}
    needs = acks = polls = 0
    for r in query("SELECT state FROM repair_devices", ()):
        st = json.loads(r[0])
        r_ = st.get("r_wanted") if st.get("r_wanted") is not None else st.get("r_observed")
        if r_ is not None:
            rs[str(r_)] = rs.get(str(r_), 0) + 1
        counts = st.get("counts", {})
        needs += counts.get("needs", 0)
        acks += counts.get("acks", 0)
        polls += counts.get("polls", 0)
    outcomes = ", ".join(f"{k} {v}" for k, v in sorted(c["outcomes"].items())) or "none yet"
    parity = ", ".join(f"r={k}: {v}" for k, v in sorted(rs.items(), key=lambda kv: int(kv[0]))) or "not observed yet"
    return [
        f"v2 devices:      {c['devices']} ({c['withoutRoute']} without a downlink route: repair unavailable)",
        f"repair:          polls {polls}, NEEDs {needs}, ACKs {acks}",
        f"downlinks:       waiting {c['pending']}, at the network server {c['sent']}; attempts: {outcomes}",
        f"parity per msg:  {parity}",
    ]


@click.command("netserver-stub")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8091, show_default=True, type=int)
@click.option("--tts-key", "tts_keys", multiple=True, help="Accepted The Things Stack downlink key (repeatable).")
@click.option("--chirpstack-token", "chirpstack_tokens", multiple=True,
              help="Accepted ChirpStack API token (repeatable).")
@click.option("--downlink-token", "downlink_tokens", multiple=True,
              help="Accepted token on POST /downlink (repeatable; none: open).")
def netserver_stub(host, port, tts_keys, chirpstack_tokens, downlink_tokens) -> None:
    """Run the stand-in network server for downlinks.

    It takes The Things Stack pushes (.../down/push, .../down/replace), ChirpStack
    queue items (POST/DELETE /api/devices/{devEui}/queue) and the collector's own
    POST /downlink, queues one downlink per device (a newer one replaces it), and
    hands it to whoever plays the device: GET /devices/{devEui}/next.
    """
    from aiohttp import web

    from collector.service.logs import setup_logging
    from collector.testing.netserver_stub import NetServerConfig, NetServerStub

    setup_logging("INFO")
    stub = NetServerStub(NetServerConfig(list(tts_keys), list(chirpstack_tokens), list(downlink_tokens)))
    click.echo(f"stand-in network server on http://{host}:{port} (devices pull from /devices/{{devEui}}/next)",
               err=True)
    web.run_app(stub.app(), host=host, port=port, access_log=None, print=None)


def register(cli: click.Group) -> None:
    cli.add_command(netserver_stub)
