"""A scenario source that goes through the radio rig: emulated modules on real
pseudo-terminals, driven by the real drivers (``hil.rn2483`` / ``hil.rak3172``) with
the bench workflow (``hil.bench.send_record``), then devicesim's ideal network server.

The emulators run at speed 0 (answers at once); the virtual time line is rebuilt
deterministically from each frame's airtime: within a record every fragment starts
``gap_s`` after the previous one ended, records of one module are ``record_gap_s``
apart, and module *m* starts ``7·m`` seconds after the scenario start.
"""

from __future__ import annotations

from collector.core import wire
from devicesim.network import Frame, NetworkServer
from hil import bench
from hil.emulator import EmulatorConfig, TxFrame, start_emulator
from hil.modem import Modem
from hil.rak3172 import RAK3172
from hil.rn2483 import RN2483
from scenarios.plan import Plan, Post, TruthRecord
from scenarios.spec import Scenario

DRIVERS: dict[str, type[Modem]] = {"rn2483": RN2483, "rak3172": RAK3172}

#: pause between two uplinks of a module (class A receive windows and a little more)
GAP_S = 3.0


def module_eui(index: int) -> str:
    return f"0004A30B{0x100 + index:08X}"


def send_through(module: str, index: int, sc: Scenario) -> list[tuple[int, bytes, list[TxFrame]]]:
    """Send the scenario's records through one emulated module; per record
    ``(msg_id, record bytes, frames the module transmitted for it)``."""
    spec = sc.hil
    assert spec is not None
    frames: list[TxFrame] = []
    emu = start_emulator(module, EmulatorConfig(region=spec.region, speed=0.0, dev_eui=module_eui(index)),
                         on_tx=frames.append)
    out = []
    try:
        modem = DRIVERS[module](emu.path)
        try:
            modem.join()
            modem.set_dr(spec.dr)
            for r in range(spec.records):
                rec = bench.make_record(0x30000 + index, r, seed=sc.seed)
                data = wire.encode_record(rec)
                before = len(frames)
                sent = bench.send_record(modem, (sc.seed + r) % 256, data)
                out.append((sent.msg_id, data, frames[before:]))
        finally:
            modem.close()
    finally:
        emu.stop()
    return out


def hil_plan(sc: Scenario) -> Plan:
    spec = sc.hil
    assert spec is not None
    start = sc.sim.start
    records: list[TruthRecord] = []
    timed: list[tuple[float, Frame]] = []
    for m, module in enumerate(spec.modules):
        t = start + 7.0 * m
        for r, (msg_id, data, frames) in enumerate(send_through(module, m, sc)):
            created = start + 7.0 * m + r * spec.record_gap_s
            t = max(t, created)
            rid = len(records)
            payloads = [f.payload for f in frames]
            everything = frozenset(range(len(payloads)))  # the ideal network hears and delivers every frame
            records.append(TruthRecord(rid, frames[0].dev_eui.upper(), msg_id, data, payloads, len(payloads[0]),
                                       created, sent=everything, heard=everything, delivered=everything,
                                       airtime_s=sum(f.airtime_s for f in frames)))
            for k, f in enumerate(frames):
                t += f.airtime_s
                timed.append((t, Frame(f.dev_eui.upper(), f.fcnt, f.payload, t, f.dr, f.region, f.frequency_hz,
                                       fport=f.fport, airtime_s=f.airtime_s, tag=(rid, k))))
                t += GAP_S
    timed.sort(key=lambda x: x[0])
    ns = NetworkServer.ideal(seed=sc.seed)
    posts = []
    for _, frame in timed:
        for d in ns.uplink(frame):
            path, body = d.body(sc.sim.format)
            rid, k = d.frame.tag
            posts.append(Post(d.time, path, body, d.frame.dev_eui, rid, k, d.uplink.received_ms))
    source = {"hil": {"modules": list(spec.modules), "region": spec.region, "dr": spec.dr,
                      "records": len(records), "frames": len(timed), "network": vars(ns.stats)}}
    return Plan(start, posts, records, source)
