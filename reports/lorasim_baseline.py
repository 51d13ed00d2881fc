"""The baseline of the simulator speed benchmark: LoRaSim's algorithm, run in the same
process on the same workload.

LoRaSim 0.2.1 (``loraDir.py``, M. Bor et al., "Do LoRa Low-Power Wide-Area Networks
Scale?", MSWiM 2016) runs one SimPy process per node: it waits an exponential gap,
puts the packet in the list of packets at the base station, checks it against every
packet in that list (same frequency, same SF, overlap with the last 5 preamble
symbols, 6 dB capture), waits the packet's airtime and takes it out again. This is
that algorithm, written here so the benchmark has a baseline measured side by side
(same machine, same load, same Python) rather than a figure from a paper. Its
delivery count is LoRaSim's: (sent - collisions) / sent, a packet below sensitivity
still counting as delivered.
"""

from __future__ import annotations

import math

import numpy as np
import simpy

from collector.core.lorawan import LORAWAN_PREAMBLE
from devicesim.channel import CRITICAL_PREAMBLE_SYMBOLS, path_loss


def run(nodes: int, *, hours: float, mean_interval_s: float, airtime_s: float, sf: int = 12, radius_m: float,
        tx_power_dbm: float = 14.0, shadowing_db: float = 3.57, seed: int = 1) -> dict:
    """LoRaSim's ``loraDir.py`` loop for ``nodes`` nodes on one channel and one SF."""
    env = simpy.Environment()
    at_bs: list[list] = []  # [start, end, rssi, collided]
    counts = {"sent": 0, "collisions": 0}
    tsym = 2.0 ** sf / 125_000
    critical = (LORAWAN_PREAMBLE - CRITICAL_PREAMBLE_SYMBOLS) * tsym
    horizon = hours * 3600.0

    def collide(p: list) -> None:
        for o in at_bs:
            # LoRaSim's timingCollision: the other packet overlaps this one's critical section
            if o[1] > p[0] + critical and o[0] < p[1]:
                # powerCollision: the weaker of two within 6 dB both die, else the weaker
                if abs(p[2] - o[2]) < 6.0:
                    p[3] = o[3] = True
                elif p[2] < o[2]:
                    p[3] = True
                else:
                    o[3] = True

    def node(i: int):
        rng = np.random.default_rng([seed, i])
        r = radius_m * math.sqrt(rng.random())
        mean_pl = float(path_loss(r))
        while True:
            yield env.timeout(float(rng.exponential(mean_interval_s)))
            if env.now >= horizon:
                return
            p = [env.now, env.now + airtime_s, tx_power_dbm - mean_pl - shadowing_db * float(rng.standard_normal()),
                 False]
            collide(p)
            at_bs.append(p)
            counts["sent"] += 1
            yield env.timeout(airtime_s)
            counts["collisions"] += p[3]
            at_bs.remove(p)

    for i in range(nodes):
        env.process(node(i))
    env.run()
    sent = counts["sent"]
    return {"sent": sent, "collisions": counts["collisions"],
            "der_lorasim": (sent - counts["collisions"]) / sent if sent else 0.0}
