"""Reassembly of hostile fragments: shared by the hypothesis test (through the
``reassemble_hostile`` fixture of conftest.py) and the atheris fuzzer (fuzz_decoders.py)."""

from __future__ import annotations

from collections.abc import Iterable

from collector.core import wire
from collector.core.assemble import Outcome, assemble
from collector.core.reassembly import Reassembler, Settings
from collector.core.uplink import Uplink

DEV_EUI = "0000000000000001"


def reassemble_hostile(payloads: Iterable[bytes], max_open_per_device: int) -> list[Outcome]:
    """Feed ``payloads`` (arbitrary headers and bodies) as uplinks of one device, one a
    second, let every message expire and assemble what closed. Only fragment errors
    may stop a payload; every closed message must become a document or an incident."""
    settings = Settings(message_timeout=1, deadline_policy="fixed", max_open_per_device=max_open_per_device)
    r = Reassembler(settings)
    closed = []
    for i, payload in enumerate(payloads):
        try:
            closed += r.feed(Uplink(DEV_EUI, 16, payload, i), float(i)).closed
        except wire.FragmentError:
            continue
    closed += r.expire(float("inf"))
    outs = []
    for m in closed:
        out = assemble(m)
        assert out.kind in ("document", "incident")
        assert (out.kind == "incident") == bool(out.code)
        assert (out.kind == "document") == (out.xml is not None)
        outs.append(out)
    return outs
