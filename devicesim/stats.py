"""Run statistics, kept by a :class:`Tracker` that is fed events as they happen (the
role ns-3's ``LoraPacketTracker`` plays): frames sent and heard, deliveries to the
application, the network server's counters, the records' outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: figures only the closed loop has (left out of the staged engine's summary)
_LOOP_ONLY = ("engine", "uplinks_deaf", "downlinks_queued", "downlinks_sent", "downlinks_received",
              "downlink_airtime_s", "rebuild_median_s", "rebuild_p95_s", "v2")


@dataclass
class Stats:
    devices: int = 0
    records: int = 0
    records_complete: int = 0
    records_cut: int = 0
    uplinks_sent: int = 0
    uplinks_heard: int = 0
    uplinks_delivered: int = 0
    app_deliveries: int = 0
    duplicates: int = 0
    dropped_fcnt: int = 0
    late_copies: int = 0
    lost_collision: int = 0
    out_of_order: int = 0
    airtime_s: float = 0.0
    #: DR -> [sent, heard, delivered]
    per_dr: dict[int, list[int]] = field(default_factory=dict)
    #: "staged" or "loop" (the closed loop also counts what follows)
    engine: str = "staged"
    #: uplink receptions a gateway missed because it was transmitting a downlink
    uplinks_deaf: int = 0
    downlinks_queued: int = 0
    downlinks_sent: int = 0
    downlinks_received: int = 0
    downlink_airtime_s: float = 0.0
    #: creation -> rebuild (v1: every fragment delivered; v2: k distinct), seconds
    rebuild_median_s: float = 0.0
    rebuild_p95_s: float = 0.0
    #: v2 devices' own counters (collector.core.device.DeviceStats), summed
    v2: dict[str, int] = field(default_factory=dict)

    def devices_v2(self, stats) -> None:
        for st in stats:
            for k, v in vars(st).items():
                self.v2[k] = self.v2.get(k, 0) + v

    def rebuild_times(self, times: list[float]) -> None:
        if times:
            times = sorted(times)
            self.rebuild_median_s = times[len(times) // 2]
            self.rebuild_p95_s = times[min(len(times) - 1, int(0.95 * len(times)))]

    @property
    def delivery_ratio(self) -> float:
        return self.uplinks_delivered / self.uplinks_sent if self.uplinks_sent else 0.0

    @property
    def der(self) -> float:
        """Data extraction rate: frames heard by at least one gateway / frames sent."""
        return self.uplinks_heard / self.uplinks_sent if self.uplinks_sent else 0.0

    @property
    def out_of_order_fraction(self) -> float:
        return self.out_of_order / self.uplinks_delivered if self.uplinks_delivered else 0.0

    @property
    def airtime_per_record(self) -> float:
        return self.airtime_s / self.records if self.records else 0.0

    def to_dict(self) -> dict:
        loop_only = () if self.engine == "loop" else _LOOP_ONLY
        d = {k: v for k, v in vars(self).items() if k != "per_dr" and k not in loop_only}
        d["airtime_s"] = round(self.airtime_s, 6)
        if self.engine == "loop":
            for k in ("downlink_airtime_s", "rebuild_median_s", "rebuild_p95_s"):
                d[k] = round(d[k], 6)
        d.update(
            delivery_ratio=round(self.delivery_ratio, 6),
            der=round(self.der, 6),
            out_of_order_fraction=round(self.out_of_order_fraction, 6),
            airtime_per_record_s=round(self.airtime_per_record, 6),
            per_dr={str(k): {"sent": v[0], "heard": v[1], "delivered": v[2],
                             "ratio": round(v[2] / v[0], 6) if v[0] else 0.0}
                    for k, v in sorted(self.per_dr.items())},
        )
        return d

    def table(self) -> str:
        """The closing summary as an aligned text table."""
        rows = [
            ("devices", f"{self.devices}"),
            ("records sent", f"{self.records}"),
            ("records complete at the application", f"{self.records_complete}"),
            ("records cut by reboots", f"{self.records_cut}"),
            ("uplinks sent", f"{self.uplinks_sent}"),
            ("uplinks heard by a gateway", f"{self.uplinks_heard} ({self.der:.1%})"),
            ("uplinks delivered to the application", f"{self.uplinks_delivered} ({self.delivery_ratio:.1%})"),
            ("deliveries incl. duplicates", f"{self.app_deliveries}"),
            ("duplicates", f"{self.duplicates}"),
            ("dropped by frame-counter check", f"{self.dropped_fcnt}"),
            ("lost to collisions (all gateways)", f"{self.lost_collision}"),
            ("out-of-order fraction", f"{self.out_of_order_fraction:.2%}"),
            ("airtime per record", f"{self.airtime_per_record:.3f} s"),
        ]
        if self.engine == "loop":
            rows += [
                ("uplinks missed by a transmitting gateway", f"{self.uplinks_deaf}"),
                ("downlinks queued / sent / received",
                 f"{self.downlinks_queued} / {self.downlinks_sent} / {self.downlinks_received}"),
                ("downlink airtime", f"{self.downlink_airtime_s:.3f} s"),
                ("creation to rebuild, median / p95", f"{self.rebuild_median_s:.1f} s / {self.rebuild_p95_s:.1f} s"),
            ]
            if self.v2:
                v = self.v2
                rows += [
                    ("v2 data / parity / repair / polls sent",
                     f"{v['data_sent']} / {v['parity_sent']} / {v['repair_sent']} / {v['polls_sent']}"),
                    ("v2 NEEDs served / ACKs / given up", f"{v['needs_served']} / {v['acked']} / {v['given_up']}"),
                ]
        for k, (sent, _heard, deliv) in sorted(self.per_dr.items()):
            rows.append((f"DR{k} delivered / sent", f"{deliv} / {sent} ({deliv / sent if sent else 0:.1%})"))
        w = max(len(a) for a, _ in rows)
        return "\n".join(f"{a:<{w}}  {b}" for a, b in rows)


class Tracker:
    """Builds :class:`Stats` from events as the run produces them.

    An engine reports every frame it put on the air (:meth:`frame`, or :meth:`frames`
    for a whole vectorised batch), every application delivery (:meth:`delivery`), and
    at the end the network server's counters and the records (:meth:`finish`).
    """

    def __init__(self, devices: int):
        self.stats = Stats(devices=devices)
        self._last: dict[str, tuple[int, int]] = {}

    def frame(self, dr: int, airtime: float, heard: bool, collided: bool = False, *, record: bool = True) -> None:
        """One uplink: its DR and airtime, whether a gateway heard it, whether it was
        lost to a collision only (audible somewhere, heard nowhere)."""
        s = self.stats
        s.uplinks_sent += 1
        s.uplinks_heard += heard
        s.lost_collision += collided
        if record:
            s.airtime_s += airtime
        row = s.per_dr.get(dr)
        if row is None:
            row = s.per_dr[dr] = [0, 0, 0]
        row[0] += 1
        row[1] += heard

    def frames(self, dr, airtime, heard_any, collided=None, *, records: bool = True) -> None:
        """A batch of uplinks as arrays (DR, airtime, heard by any gateway, lost to collisions)."""
        import numpy as np

        s = self.stats
        s.uplinks_sent += int(dr.size)
        s.uplinks_heard += int(heard_any.sum())
        if collided is not None:
            s.lost_collision += int(collided.sum())
        if records:
            s.airtime_s += float(airtime.sum())
        for d in np.unique(dr):
            m = dr == d
            row = s.per_dr.setdefault(int(d), [0, 0, 0])
            row[0] += int(m.sum())
            row[1] += int(heard_any[m].sum())

    def delivery(self, dev_eui: str, session: int, fcnt: int, dr: int, duplicate: bool) -> None:
        """One application delivery (duplicates included), in delivery-time order."""
        s = self.stats
        s.app_deliveries += 1
        if duplicate:
            return
        s.per_dr[dr][2] += 1
        key = (session, fcnt)
        prev = self._last.get(dev_eui)
        if prev is not None and key < prev:
            s.out_of_order += 1
        else:
            self._last[dev_eui] = key

    def finish(self, *, records: int, complete: int, cut: int, network=None) -> Stats:
        """The closing figures: records made, complete at the application, cut by
        reboots, and the network server's counters (``NetworkStats``) when it ran."""
        s = self.stats
        s.records, s.records_complete, s.records_cut = records, complete, cut
        if network is not None:
            s.uplinks_delivered = network.accepted
            s.duplicates = network.duplicates
            s.dropped_fcnt = network.dropped_fcnt
            s.late_copies = network.late_copies
        return s
