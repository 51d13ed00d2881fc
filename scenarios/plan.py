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
    #: fragment indices the device transmitted, heard by at least one gateway, and
    #: delivered by the network server to the application (None: the source does not
    #: know, e.g. the radio rig's ideal network)
    sent: frozenset[int] | None = None
    heard: frozenset[int] | None = None
    delivered: frozenset[int] | None = None
    #: uplink airtime of every frame sent for this record (s): fragments, parity, polls
    airtime_s: float = 0.0
    #: wire format v2 bookkeeping (zero for v1): parity rows and polls sent, downlinks
    #: received, repair rounds served, and whether the device gave up after its rounds
    parity_sent: int = 0
    polls_sent: int = 0
    downlinks: int = 0
    repair_rounds: int = 0
    gave_up: bool = False
    #: distinct frames that rebuild it (v2: k of data and parity); None: all fragments
    need: int | None = None


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
    airtime = [0.0] * len(res.records)
    heard: list[set[int]] = [set() for _ in res.records]
    heard_any = res.heard.any(axis=0).tolist() if len(ft) else []
    for i, (r, k) in enumerate(zip(ft.record, ft.frag, strict=True)):
        if r >= 0:
            airtime[r] += ft.airtime[i]
            if heard_any[i]:
                heard[r].add(k)
    records = [TruthRecord(r.record_id, r.dev_eui, r.msg_id, r.record, r.fragments, r.size, r.created_at,
                           sent=frozenset(r.fragments_sent), heard=frozenset(heard[r.record_id]),
                           delivered=frozenset(r.delivered_at), airtime_s=airtime[r.record_id])
               for r in res.records]
    return Plan(sc.sim.start, posts, records, {"simulator": res.stats.to_dict()})
