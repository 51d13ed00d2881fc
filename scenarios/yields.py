"""Record yield: of the records the devices generated, how many reached the Web App
complete and byte-equal to the ground truth, what the rest were lost to, and what the
radio paid for it (pure; :func:`scenarios.measure.measure` folds these values into
its own).

A record the Web App did not get as its exact complete document is charged to the
first stage of its path that lost a fragment it needed, in path order:

1. ``gave_up``: the device never sent it (a reboot cut the message; a v2 device gave
   up after its repair rounds);
2. ``radio``: sent but heard by no gateway;
3. ``network_server``: heard but not delivered to the application (frame-counter
   check, a gateway's backhaul);
4. ``collector_down``: delivered while the collector was down (refused);
5. ``other``: every fragment reached the collector, yet no exact complete document
   was stored (closed early, still pending, dead-lettered, an ingest error, a
   mismatch): the collector's or the Web App's doing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: name -> one-line definition (docs/scenarios.md has the full ones)
YIELD_MEASUREMENTS: dict[str, str] = {
    "record_yield": "records whose complete document reached the Web App byte-equal to the ground truth "
                    "/ records the devices generated",
    "record_delivered": "records with a document (complete or partial) at the Web App / records generated",
    "records_yielded": "records whose exact complete document reached the Web App",
    "lost_gave_up": "records not yielded because the device never sent a fragment (reboot cut, v2 gave up)",
    "lost_radio": "records not yielded because a needed fragment was heard by no gateway",
    "lost_network_server": "records not yielded because the network server did not deliver a fragment it heard",
    "lost_collector_down": "records not yielded because a fragment was delivered while the collector was down",
    "lost_other": "records not yielded although every fragment reached the collector",
    "airtime_per_record_s": "uplink airtime (fragments, parity, polls) / records generated, s",
    "airtime_per_delivered_record_s": "uplink airtime (fragments, parity, polls) / records yielded, s",
    "frames_per_delivered_record": "uplink frames sent for records (fragments, parity, polls) / records yielded",
    "parity_rows_per_record": "parity rows sent / records generated",
    "polls_per_record": "polls sent / records generated",
    "downlinks_per_record": "downlinks the gateways sent naming the record's message (received or not) "
                            "/ records generated",
    "repair_rounds": "repair rounds the devices served (NEEDs answered)",
    "record_yield_followed": "record_yield over the records their device followed with a later record in the run "
                             "(a lost repair answer can only be asked for again on a later uplink)",
    "record_yield_v1": "record_yield over the records of v1 devices only",
    "record_yield_v2": "record_yield over the records of v2 devices only",
    "airtime_per_record_v1_s": "airtime_per_record_s over the records of v1 devices only",
    "airtime_per_record_v2_s": "airtime_per_record_s over the records of v2 devices only",
    "airtime_v2_over_v1": "airtime_per_record_v2_s / airtime_per_record_v1_s, both measured in the same run "
                          "(a mixed fleet)",
}

CAUSES = ("gave_up", "radio", "network_server", "collector_down", "other")


@dataclass(frozen=True)
class Fate:
    """What the source and the runner know of one record's fragments."""

    #: fragments the message has (v1: all of them are needed)
    count: int
    sent: frozenset[int] | None
    heard: frozenset[int] | None
    delivered: frozenset[int] | None
    #: delivered while the collector was down
    refused: frozenset[int]
    airtime_s: float = 0.0
    parity_sent: int = 0
    polls_sent: int = 0
    downlinks: int = 0
    repair_rounds: int = 0
    gave_up: bool = False
    #: distinct frames that rebuild the record (v2: any k of its data and parity
    #: frames); None: every fragment 0..count-1 (v1)
    need: int | None = None

    @property
    def frames(self) -> int:
        sent = len(self.sent) if self.sent is not None else self.count
        if self.need is not None:  # v2: ``sent`` holds the parity rows' indices already
            return sent + self.polls_sent
        return sent + self.parity_sent + self.polls_sent


def cause(f: Fate) -> str:
    """The stage that lost a fragment the record needed (see the module docstring)."""
    if f.need is None:
        every = set(range(f.count))

        def short(have: frozenset[int] | None) -> bool:
            return have is not None and not every <= have
    else:
        k = f.need

        def short(have: frozenset[int] | None) -> bool:
            return have is not None and len(have) < k
    if f.gave_up or short(f.sent):
        return "gave_up"
    if short(f.heard):
        return "radio"
    if short(f.delivered):
        return "network_server"
    if f.refused:
        return "collector_down"
    return "other"


def _per(num: float, den: int) -> float | None:
    return num / den if den else None


def yield_values(fates: list[Fate], yielded: list[bool], delivered: list[bool]) -> dict[str, float | int | None]:
    """``yielded[i]``/``delivered[i]``: record ``i`` reached the Web App as its exact
    complete document / with any document. Ratios over no record are None (n/a)."""
    n = len(fates)
    lost = dict.fromkeys(CAUSES, 0)
    for f, y in zip(fates, yielded, strict=True):
        if not y:
            lost[cause(f)] += 1
    n_yield = sum(yielded)
    airtime = sum(f.airtime_s for f in fates)
    return {
        "record_yield": _per(n_yield, n),
        "record_delivered": _per(sum(delivered), n),
        "records_yielded": n_yield,
        **{f"lost_{c}": lost[c] for c in CAUSES},
        "airtime_per_record_s": _per(airtime, n),
        "airtime_per_delivered_record_s": _per(airtime, n_yield),
        "frames_per_delivered_record": _per(sum(f.frames for f in fates), n_yield),
        "parity_rows_per_record": _per(sum(f.parity_sent for f in fates), n),
        "polls_per_record": _per(sum(f.polls_sent for f in fates), n),
        "downlinks_per_record": _per(sum(f.downlinks for f in fates), n),
        "repair_rounds": sum(f.repair_rounds for f in fates),
    }


def fates_from(records: list, refused: Mapping[int, set[int]], acked: Mapping[int, Mapping[int, object]]) -> list[Fate]:
    """One :class:`Fate` per :class:`scenarios.plan.TruthRecord`, with the fragments the
    runner could not post because the collector was down (``refused``, by record id)
    and that no other copy brought to it (``acked``)."""
    return [Fate(len(r.fragments), r.sent, r.heard, r.delivered,
                 frozenset(refused.get(r.record_id, set()) - set(acked.get(r.record_id, {}))),
                 r.airtime_s, r.parity_sent, r.polls_sent, r.downlinks, r.repair_rounds, r.gave_up,
                 r.need)
            for r in records]


def by_wire(wires: list[str], fates: list[Fate], yielded: list[bool],
            delivered: list[bool]) -> dict[str, float | None]:
    """Yield and airtime per generated record for the v1 and the v2 devices of one
    run apart, and the airtime ratio v2 / v1 (n/a unless the fleet has both)."""
    out: dict[str, float | None] = {}
    for w in ("v1", "v2"):
        idx = [i for i, x in enumerate(wires) if x == w]
        sub = yield_values([fates[i] for i in idx], [yielded[i] for i in idx], [delivered[i] for i in idx])
        out[f"record_yield_{w}"] = sub["record_yield"]
        out[f"airtime_per_record_{w}_s"] = sub["airtime_per_record_s"]
    a1, a2 = out["airtime_per_record_v1_s"], out["airtime_per_record_v2_s"]
    out["airtime_v2_over_v1"] = a2 / a1 if a1 and a2 is not None else None
    return out
