"""Ingest throughput with durable commits: the collector against a bare aiohttp handler.

Both servers run as their own process and get the same load from wrk (an external
load generator, HTTP/1.1 keep-alive): real-shaped The Things Stack webhook bodies
of many devices, each body a distinct fragment. The bare handler only reads and
parses the JSON and answers 202; the collector parses, reassembles, commits the
fragment and the message state to SQLite (WAL, synchronous=FULL, group commit) and
answers 202 only after the commit. The figure of merit is the ratio of requests/s
(target >= 0.6), with the p50/p99 latency of each.

Both servers stay up for the whole run and the measured runs alternate (bare,
collector, bare, ...; ``--repeat`` times each), so load from elsewhere on the
machine falls on both alike; the medians and the spread are reported. Every wrk
run continues where the previous one stopped in the list of bodies, so the
collector sees new fragments only (a repeated body would be a cheap "duplicate").

wrk is a Debian package (``apt-get install -y wrk``); the script stops with that hint
when it is missing. Usage::

    .venv/bin/python reports/bench_ingest.py [--duration 10] [--repeat 3] [--connections 32]

Writes reports/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from collector.harness import free_port

HERE = Path(__file__).resolve().parent
TOKEN = "bench-token"

LUA = r"""
local bodies = {}
local counter = 0
local threads = {}

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
  table.insert(threads, thread)
end

function init(args)
  for line in io.lines(args[1]) do bodies[#bodies + 1] = line end
  nthreads = tonumber(args[2])
  idx = tonumber(args[4]) + tid - 1
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. args[3]}
end

function request()
  idx = idx + nthreads
  local body = bodies[(idx % #bodies) + 1]
  return wrk.format("POST", "/uplink/ttn", headers, body)
end
"""

BARE = r"""
import sys
import orjson
from aiohttp import web

async def handle(request):
    body = await request.read()
    orjson.loads(body)  # the library the collector parses with
    return web.Response(body=orjson.dumps({"status": "accepted"}), status=202,
                        content_type="application/json", charset="utf-8")

app = web.Application(client_max_size=65536)
app.router.add_post("/uplink/ttn", handle)
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""



def make_bodies(path: Path, count: int) -> None:
    """``count`` distinct TTS uplink bodies: 6-fragment messages of many devices."""
    sys.path.insert(0, str(HERE.parent))
    from collector import wire
    from collector.examples import example_record
    from devicesim.formats import AppUplink, GatewayRx, ttn_body

    rec = wire.encode_record(example_record())
    with path.open("w") as f:
        n = 0
        m = 0
        while n < count:
            dev = f"{0x70B3D57E00000000 + m // 200:016X}"
            frags = wire.fragment(m % 200, rec, 115)
            for i, p in enumerate(frags):
                t = (1_800_000_000 + m) * 10**9 + i * 10**8
                up = AppUplink(dev, 16, m * 8 + i, p, t, dr=3, sf=9, frequency_hz=868_300_000,
                               gateways=(GatewayRx("gw-roof", -97, 7.5, t // 10**6, "9C5C8E00001A05C4"),),
                               airtime_s=0.185)
                f.write(json.dumps(ttn_body(up), separators=(",", ":")) + "\n")
                n += 1
            m += 1


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(text: str) -> float:
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    if not m:
        raise ValueError(f"cannot read wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def run_wrk(port: int, bodies: Path, duration: int, connections: int, threads: int, lua: Path,
            offset: int = 0) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua),
           f"http://127.0.0.1:{port}", "--", str(bodies), str(threads), TOKEN, str(offset)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    return {"requests_per_s": rps, "requests": total, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1).strip() if errors else None,
            "latency_ms": {"p50": lat.get("50"), "p90": lat.get("90"), "p99": lat.get("99")}}


class Server:
    """One server under test, as its own process, with its position in the bodies."""

    def __init__(self, name: str, cmd: list[str], port: int, env: dict | None = None):
        self.name, self.port, self.offset = name, port, 0
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.runs: list[dict] = []
        wait_ready(f"http://127.0.0.1:{port}/healthz", self.proc)

    def load(self, duration: int, args, bodies: Path, lua: Path) -> dict:
        res = run_wrk(self.port, bodies, duration, args.connections, args.threads, lua, self.offset)
        self.offset += res["requests"] + args.connections
        return res

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def summary(runs: list[dict]) -> dict:
    """Median of each figure over the runs, and the runs themselves."""
    rps = [r["requests_per_s"] for r in runs]
    return {
        "requests_per_s": round(median(rps), 1),
        "requests_per_s_min": min(rps),
        "requests_per_s_max": max(rps),
        "latency_ms": {p: round(median([r["latency_ms"][p] for r in runs]), 2) for p in ("p50", "p90", "p99")},
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": [r["socket_errors"] for r in runs if r["socket_errors"]] or None,
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs of each server (alternating)")
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--out", default=str(HERE / "results" / "ingest.json"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: it is the external load generator this benchmark uses "
                 "(Debian/Ubuntu: apt-get install -y wrk)")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        t = Path(tmp)
        bodies = t / "bodies.jsonl"
        lua = t / "post.lua"
        lua.write_text(LUA)
        # enough distinct fragments for every run at well above the expected rate
        n_bodies = max(120_000, 6_000 * (args.repeat * args.duration + 2))
        make_bodies(bodies, n_bodies)
        bare_script = t / "bare.py"
        bare_script.write_text(BARE)
        db = t / "collector.db"
        env = {**os.environ, "COLLECTOR_LOG_LEVEL": "WARNING"}
        servers: list[Server] = []
        try:
            port = free_port()
            servers.append(Server("bare aiohttp handler", [py, str(bare_script), str(port)], port))
            port = free_port()
            servers.append(Server("collector", [py, "-m", "collector", "serve", "--port", str(port), "--db", str(db),
                                                "--ingest-token", TOKEN, "--message-timeout", "86400"], port, env))
            for srv in servers:
                srv.load(2, args, bodies, lua)  # warm-up
            for rep in range(args.repeat):
                for srv in servers:
                    print(f"{srv.name} (run {rep + 1}/{args.repeat}): {args.duration} s at {args.connections} "
                          f"connections ...", file=sys.stderr, flush=True)
                    res = srv.load(args.duration, args, bodies, lua)
                    srv.runs.append(res)
                    print(f"  {res['requests_per_s']:.0f} req/s, p50 {res['latency_ms']['p50']:.2f} ms, "
                          f"p99 {res['latency_ms']['p99']:.2f} ms, non-2xx {res['non_2xx']}", file=sys.stderr)
        finally:
            for srv in servers:
                srv.stop()
        if servers[1].offset > n_bodies:
            print("warning: the collector got more requests than there are distinct bodies; the repeats were "
                  "duplicates", file=sys.stderr)
        stored = json.loads(subprocess.run([py, "-m", "collector", "status", "--db", str(db), "--json"],
                                           capture_output=True, text=True, check=True).stdout)
    bare, coll = (summary(srv.runs) for srv in servers)
    ratios = [c["requests_per_s"] / b["requests_per_s"] for b, c in zip(bare["runs"], coll["runs"], strict=True)]
    ratio = coll["requests_per_s"] / bare["requests_per_s"]
    result = {
        "benchmark": "ingest throughput with durable commits (TTS webhook bodies, wrk keep-alive)",
        "command": "python reports/bench_ingest.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "parameters": {"duration_s": args.duration, "repeat": args.repeat, "connections": args.connections,
                       "wrk_threads": args.threads, "json": "orjson (both)", "synchronous": "FULL"},
        "bare": bare,
        "collector": coll,
        "collector_store": {"fragments_committed": stored["fragments"], "open_messages": stored["openMessages"],
                            "messages": stored["messages"]},
        "ratio": round(ratio, 3),
        "ratio_per_run": [round(r, 3) for r in ratios],
        "target_ratio": 0.6,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"median req/s: bare {bare['requests_per_s']:.0f}, collector {coll['requests_per_s']:.0f}; ratio "
          f"{ratio:.2f} (per run {', '.join(f'{r:.2f}' for r in ratios)}; target >= 0.6); written to {out}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
