"""Ingest throughput with durable commits: the collector against a bare aiohttp handler.

Both servers run as their own process and get the same load from wrk (an external
load generator, HTTP/1.1 keep-alive): real-shaped The Things Stack webhook bodies
of many devices, each body a distinct fragment. The bare handler only reads and
parses the JSON and answers 202; the collector parses, reassembles, commits the
fragment and the message state to SQLite (WAL, synchronous=FULL, group commit) and
answers 202 only after the commit. The figure of merit is the ratio of requests/s
(target >= 0.6), with the p99 latency of each.

wrk is a Debian package (``apt-get install -y wrk``); the script stops with that hint
when it is missing. Usage::

    .venv/bin/python reports/bench_ingest.py [--duration 10] [--connections 32]

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
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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
  idx = tid - 1
  headers = {["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. args[3]}
end

function request()
  idx = idx + nthreads
  local body = bodies[(idx % #bodies) + 1]
  return wrk.format("POST", "/uplink/ttn", headers, body)
end
"""

BARE = r"""
import json, sys
from aiohttp import web

async def handle(request):
    body = await request.read()
    json.loads(body)
    return web.json_response({"status": "accepted"}, status=202)

app = web.Application(client_max_size=65536)
app.router.add_post("/uplink/ttn", handle)
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


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


def run_wrk(port: int, bodies: Path, duration: int, connections: int, threads: int, lua: Path) -> dict:
    cmd = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(lua),
           f"http://127.0.0.1:{port}", "--", str(bodies), str(threads), TOKEN]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    return {"requests_per_s": rps, "requests": total, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1).strip() if errors else None,
            "latency_ms": {"p50": lat.get("50"), "p90": lat.get("90"), "p99": lat.get("99")}}


def bench(name: str, cmd: list[str], port: int, health: str, args, bodies: Path, lua: Path, env=None) -> dict:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        wait_ready(health, proc)
        run_wrk(port, bodies, 2, args.connections, args.threads, lua)  # warm-up
        print(f"{name}: {args.duration} s at {args.connections} connections ...", file=sys.stderr, flush=True)
        res = run_wrk(port, bodies, args.duration, args.connections, args.threads, lua)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    print(f"{name}: {res['requests_per_s']:.0f} req/s, p99 {res['latency_ms']['p99']:.2f} ms, "
          f"non-2xx {res['non_2xx']}", file=sys.stderr)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=10, help="seconds per measured run")
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
        make_bodies(bodies, 120_000)
        bare_script = t / "bare.py"
        bare_script.write_text(BARE)

        port = free_port()
        bare = bench("bare aiohttp handler", [py, str(bare_script), str(port)], port,
                     f"http://127.0.0.1:{port}/healthz", args, bodies, lua)

        port = free_port()
        db = t / "collector.db"
        env = {**os.environ, "COLLECTOR_LOG_LEVEL": "WARNING"}
        coll = bench("collector", [py, "-m", "collector", "serve", "--port", str(port), "--db", str(db),
                                   "--ingest-token", TOKEN, "--message-timeout", "86400"],
                     port, f"http://127.0.0.1:{port}/healthz", args, bodies, lua, env)
        stored = json.loads(subprocess.run([py, "-m", "collector", "status", "--db", str(db), "--json"],
                                           capture_output=True, text=True, check=True).stdout)
    ratio = coll["requests_per_s"] / bare["requests_per_s"]
    result = {
        "benchmark": "ingest throughput with durable commits (TTS webhook bodies, wrk keep-alive)",
        "command": "python reports/bench_ingest.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "parameters": {"duration_s": args.duration, "connections": args.connections, "wrk_threads": args.threads},
        "bare": bare,
        "collector": coll,
        "collector_store": {"fragments_committed": stored["fragments"], "open_messages": stored["openMessages"],
                            "messages": stored["messages"]},
        "ratio": round(ratio, 3),
        "target_ratio": 0.6,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"ratio collector/bare = {ratio:.2f} (target >= 0.6); written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
