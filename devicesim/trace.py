"""JSON-lines trace of a simulation run.

Line kinds, in file order: one ``meta`` line (seed, region, format, start, config),
one ``uplink`` line per application delivery in delivery-time order (``at`` RFC 3339
virtual delivery time, ``path`` collector endpoint, ``body`` exact request body,
``devEui``, ``fCnt``, ``duplicate``), one ``downlink`` line per downlink a gateway
transmitted (closed loop only, in order of decision), one ``record`` line per message
with its ground truth, and a closing ``summary`` line with the run's statistics. Same seed and
configuration give a byte-identical file.
"""

from __future__ import annotations

import functools
import gc
import json
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from collector.core.timefmt import format_ns
from devicesim.sim import RecordTruth, SimResult


@functools.lru_cache(maxsize=4096)
def _second(s: int) -> str:
    return format_ns(s * 1_000_000_000)[:-11]


def rfc3339(t: float) -> str:
    """Unix seconds (float) -> RFC 3339 with nanoseconds, UTC (as format_ns writes it)."""
    ns = round(t * 1e9)
    s, frac = divmod(ns, 1_000_000_000)
    return f"{_second(s)}.{frac:09d}Z"


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, check_circular=False)


def _dumps(obj: dict) -> str:
    return _ENCODER.encode(obj)


def record_line(r: RecordTruth) -> dict:
    return {
        "kind": "record",
        "devEui": r.dev_eui,
        "device": r.device,
        "msgId": r.msg_id,
        "recordSeq": r.record_seq,
        "session": r.session,
        "dr": r.dr,
        "size": r.size,
        "count": r.count,
        "createdAt": rfc3339(r.created_at),
        "record": r.record.hex(),
        "fragments": [f.hex() for f in r.fragments],
        "sentAt": [rfc3339(t) if t is not None else None for t in r.sent_at],
        "fragmentsSent": r.fragments_sent,
        "fragmentsDelivered": r.fragments_delivered,
        "deliveredAt": {str(i): [rfc3339(t) for t in ts] for i, ts in sorted(r.delivered_at.items())},
        "complete": r.complete,
    } | ({} if r.wire == "v1" else {
        "wire": r.wire, "uplinks": r.uplinks, "airtimeS": round(r.airtime_s, 6),
        "downlinks": round(r.downlinks, 6), "downlinkAirtimeS": round(r.downlink_airtime_s, 6),
        "rebuiltAt": rfc3339(r.rebuilt_at) if r.rebuilt_at is not None else None,
    })


def trace_lines(result: SimResult, fmt: str | None = None) -> Iterator[str]:
    """The trace, one JSON document per line (without newlines)."""
    cfg = result.config
    f = fmt or cfg.format
    yield _dumps({"kind": "meta", "seed": cfg.seed, "region": cfg.region, "format": f,
                  "start": rfc3339(cfg.start), "hours": cfg.hours, "config": cfg.to_dict()})
    for d in result.deliveries:
        path, body = d.body(f)
        yield _dumps({"kind": "uplink", "at": rfc3339(d.time), "path": path, "body": body,
                      "devEui": d.frame.dev_eui, "fCnt": d.frame.fcnt, "duplicate": d.duplicate})
    for x in result.downlinks:
        yield _dumps({"kind": "downlink", "at": rfc3339(x.time), "devEui": x.dev_eui, "gateway": x.gateway,
                      "window": x.window, "frequency": x.frequency_hz, "dr": x.dr, "airtimeS": round(x.airtime_s, 6),
                      "payload": x.payload.hex(), "received": x.received, "fCnt": result.frames.fcnt[x.uplink]})
    for r in result.records:
        yield _dumps(record_line(r))
    yield _dumps({"kind": "summary", **result.stats.to_dict()})


def write_trace(result: SimResult, out: str | Path | IO[str], fmt: str | None = None) -> int:
    """Write the trace to a path or text stream; returns the number of lines."""
    if isinstance(out, str | Path):
        with open(out, "w", encoding="ascii", newline="\n") as fp:
            return write_trace(result, fp, fmt)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _write(result, out, fmt)
    finally:
        if enabled:
            gc.enable()


def _write(result: SimResult, out: IO[str], fmt: str | None) -> int:
    n = 0
    buf: list[str] = []
    for line in trace_lines(result, fmt):
        buf.append(line)
        n += 1
        if len(buf) >= 4096:
            out.write("\n".join(buf) + "\n")
            buf.clear()
    if buf:
        out.write("\n".join(buf) + "\n")
    return n


def read_trace(path: str | Path) -> Iterator[dict]:
    """Parse a trace file line by line."""
    with open(path, encoding="ascii") as fp:
        for line in fp:
            if line.strip():
                yield json.loads(line)
