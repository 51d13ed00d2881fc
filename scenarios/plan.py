"""The plan of a run: every uplink to POST at its virtual time, and the ground truth
records they carry, from the simulator or from the radio rig (:mod:`scenarios.hilsource`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from scenarios.spec import Scenario


@dataclass
class Post:
    """One uplink delivery: at virtual ``time`` POST ``body`` to ``path``."""

    time: float
    path: str
    body: dict
    dev_eui: str
    #: the ground-truth record and fragment index it carries (-1: none)
    record: int
    frag: int
    received_ms: int


@dataclass
class TruthRecord:
    record_id: int
    dev_eui: str
    msg_id: int
    record: bytes
    fragments: list[bytes]
    size: int
    created_at: float


@dataclass
class Plan:
    start: float
    posts: list[Post]
    records: list[TruthRecord]
    #: what the source says about itself (simulator statistics, modules, ...)
    source: dict = field(default_factory=dict)


def devicesim_plan(sc: Scenario, progress: Callable[[float], None] | None = None) -> Plan:
    """Simulate the scenario's fleet; every application delivery becomes a :class:`Post`."""
    from devicesim.sim import simulate

    res = simulate(sc.sim, progress=progress)
    ft = res.frames
    fmt = sc.sim.format
    posts = []
    for d in res.deliveries:
        i = d.frame.tag
        path, body = d.body(fmt)
        posts.append(Post(d.time, path, body, d.frame.dev_eui, ft.record[i], ft.frag[i], d.uplink.received_ms))
    records = [TruthRecord(r.record_id, r.dev_eui, r.msg_id, r.record, r.fragments, r.size, r.created_at)
               for r in res.records]
    return Plan(sc.sim.start, posts, records, {"simulator": res.stats.to_dict()})
