"""Ingest throughput with durable commits: the collector against a bare aiohttp handler.

Every server runs as its own process (tree) and gets the same load from wrk (an
external load generator, HTTP/1.1 keep-alive): real-shaped The Things Stack webhook
bodies of many devices, each body a distinct fragment of a 6-fragment message. The
servers:

- ``bare``: a bare aiohttp handler that only reads and parses the JSON and answers
  202 (the baseline; one process, as ``web.run_app`` runs it);
- ``gate``: the collector's own ingest checks only (token, body, content type, the
  full parse and validation of the body), answering 202 without reassembly or store:
  where the parsing part of the gap comes from;
- ``collector``: ``collector serve`` in one process;
- ``collector-w2``: ``collector serve --workers 2`` (two HTTP worker processes in
  front of the process that owns the reassembler and the store).

The collector parses, reassembles, commits the fragment and the message state to
SQLite (WAL, synchronous=FULL, group commit) and answers 202 only after the commit;
messages completed during the run are assembled into documents as in production.
The figures of merit are each collector's CPU time per acknowledged uplink (all its
processes) over the bare handler's CPU time per request, run beside it in the same
round (``cpu_ratio``, target <= 2.0; it does not depend on how many cores the machine
has or how busy it is), and its requests/s over the bare handler's (reported; no longer a target),
with p50/p90/p99 latency, at each connection count. ``reports/bench_guard.py`` fails
when a fresh CPU ratio is more than 25 % worse than the recorded one.

All servers stay up for the whole run and the measured runs alternate (bare, gate,
collector, ..., then again; ``--repeat`` times each) so load from elsewhere on the
machine falls on all alike; medians and the spread are reported. Before each run the
script waits until every server has finished the work an earlier run left (the
collectors assemble completed messages after answering), so no run pays for
another's backlog. Every wrk run
continues where the previous one stopped in the list of bodies, so a collector sees
new fragments only (a repeated body would be a cheap "duplicate").

wrk is a Debian package (``apt-get install -y wrk``); the script stops with that hint
when it is missing. Usage::

    .venv/bin/python reports/bench_ingest.py [--duration 5] [--repeat 3] [--connections 32,128]
        [--servers bare,gate,collector,collector-w2] [--reference DIR --servers bare,reference,collector]

``--reference DIR`` adds the collector of another checkout (``git worktree add DIR
<commit>``) as the servers ``reference`` and ``reference-w2``: before and after a
change, measured in the same rounds.

Writes reports/results/ingest.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

from collector.testing.harness import free_port
from collector.testing.http import http

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

GATE = r"""
import sys
from aiohttp import web
from collector.service.config import ServiceConfig
from collector.service.gate import Answer, IngestGate

class Count:
    def uplink(self, integration, outcome):
        pass

gate = IngestGate(ServiceConfig(ingest_token=[sys.argv[2]]), Count())

async def handle(request):
    up = await gate.admit(request, "ttn")
    if isinstance(up, Answer):
        return up.response()
    return Answer(202, {"status": "accepted", "message": f"{up.dev_eui}-{up.payload[0]}", "fragment": up.payload[1],
                        "closed": []}).response()

app = web.Application(client_max_size=65536)
app.router.add_post("/uplink/ttn", handle)
app.router.add_get("/healthz", lambda r: web.json_response({"status": "ok"}))
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

SERVERS = {
    "bare": "bare aiohttp handler",
    "gate": "collector's ingest checks only (no store)",
    "collector": "collector, one process",
    "collector-w2": "collector, 2 HTTP workers",
    "reference": "collector of --reference, one process",
    "reference-w2": "collector of --reference, 2 HTTP workers",
}
#: the servers run unless --servers says otherwise
DEFAULT_SERVERS = ("bare", "gate", "collector", "collector-w2")


def make_bodies(path: Path, count: int) -> None:
    """``count`` distinct TTS uplink bodies: 6-fragment messages of many devices."""
    sys.path.insert(0, str(HERE.parent))
    from collector.core import wire
    from collector.testing.examples import example_record
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
            if http("GET", url, timeout=1).status < 400:
                return
        except OSError:
            pass
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
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    wrk_cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    lat = {p: _ms(v) for p, v in re.findall(r"^\s+(50|75|90|99)%\s+(\S+)", out, re.M)}
    return {"requests_per_s": rps, "requests": total, "non_2xx": int(non2xx.group(1)) if non2xx else 0,
            "socket_errors": errors.group(1).strip() if errors else None,
            "latency_ms": {"p50": lat.get("50"), "p90": lat.get("90"), "p99": lat.get("99")},
            "wrk_cpu_us_per_request": round(wrk_cpu / max(1, total) * 1e6, 1)}


_TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and every process below it, now."""
    stats: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                f = Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            stats[int(d)] = (int(f[1]), (int(f[11]) + int(f[12])) / _TICK)
    total, todo, seen = 0.0, [root], set()
    while todo:
        pid = todo.pop()
        if pid in seen or pid not in stats:
            continue
        seen.add(pid)
        total += stats[pid][1]
        todo.extend(p for p, (ppid, _) in stats.items() if ppid == pid)
    return total


class Server:
    """One server under test, as its own process, with its position in the bodies."""

    def __init__(self, key: str, cmd: list[str], port: int, env: dict | None = None):
        self.key, self.name, self.port, self.offset = key, SERVERS[key], port, 0
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        self.runs: dict[int, list[dict]] = {}
        wait_ready(f"http://127.0.0.1:{port}/healthz", self.proc)

    def load(self, duration: int, connections: int, args, bodies: Path, lua: Path) -> dict:
        cpu0 = tree_cpu(self.proc.pid)
        res = run_wrk(self.port, bodies, duration, connections, args.threads, lua, self.offset)
        cpu = tree_cpu(self.proc.pid) - cpu0
        res["server_cpu_us_per_request"] = round(cpu / max(1, res["requests"]) * 1e6, 1)
        self.offset += res["requests"] + connections
        return res

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def wait_idle(servers: list[Server], limit_s: float = 60.0) -> float:
    """Wait until no server is still working off an earlier run (the collectors
    assemble completed messages after answering): all their processes together
    under 5 % of a CPU over half a second. Returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        before = sum(tree_cpu(s.proc.pid) for s in servers)
        time.sleep(0.5)
        if sum(tree_cpu(s.proc.pid) for s in servers) - before < 0.025:
            break
    return time.monotonic() - t0


def summary(runs: list[dict]) -> dict:
    """Median of each figure over the runs, and the runs themselves."""
    rps = [r["requests_per_s"] for r in runs]
    return {
        "requests_per_s": round(median(rps), 1),
        "requests_per_s_min": min(rps),
        "requests_per_s_max": max(rps),
        "latency_ms": {p: round(median([r["latency_ms"][p] for r in runs]), 2) for p in ("p50", "p90", "p99")},
        "server_cpu_us_per_request": round(median([r["server_cpu_us_per_request"] for r in runs]), 1),
        "wrk_cpu_us_per_request": round(median([r["wrk_cpu_us_per_request"] for r in runs]), 1),
        "non_2xx": sum(r["non_2xx"] for r in runs),
        "socket_errors": [r["socket_errors"] for r in runs if r["socket_errors"]] or None,
        "runs": runs,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=int, default=5, help="seconds per measured run")
    ap.add_argument("--repeat", type=int, default=3, help="measured runs of each server at each connection count")
    ap.add_argument("--connections", default="32,128", help="comma-separated wrk connection counts")
    ap.add_argument("--servers", default=",".join(DEFAULT_SERVERS), help=f"comma-separated, of {', '.join(SERVERS)}")
    ap.add_argument("--reference", metavar="DIR",
                    help="another checkout of the project (e.g. a git worktree of an earlier commit): the "
                         "reference servers run its collector, beside this one's, for a before/after in one run")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads")
    ap.add_argument("--out", default=str(HERE / "results" / "ingest.json"))
    args = ap.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: it is the external load generator this benchmark uses "
                 "(Debian/Ubuntu: apt-get install -y wrk)")
    try:
        conns = [int(c) for c in args.connections.split(",") if c.strip()]
    except ValueError:
        sys.exit(f"--connections: {args.connections!r} is not a comma-separated list of numbers")
    keys = [k.strip() for k in args.servers.split(",") if k.strip()]
    unknown = [k for k in keys if k not in SERVERS]
    if unknown or "bare" not in keys:
        sys.exit(f"--servers: {', '.join(unknown) or 'bare is missing'}; choose from {', '.join(SERVERS)} "
                 f"(bare is the baseline and required)")
    if any(k.startswith("reference") for k in keys) and not (
            args.reference and (Path(args.reference) / "collector" / "__init__.py").is_file()):
        sys.exit("--servers reference...: give --reference, a directory holding another checkout's collector/")
    py = sys.executable
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        t = Path(tmp)
        bodies = t / "bodies.jsonl"
        lua = t / "post.lua"
        lua.write_text(LUA)
        # enough distinct fragments for every run of a collector at well above the expected rate
        n_bodies = max(120_000, 15_000 * (args.repeat * args.duration * len(conns) + 4))
        print(f"making {n_bodies:,} uplink bodies ...", file=sys.stderr, flush=True)
        make_bodies(bodies, n_bodies)
        (t / "bare.py").write_text(BARE)
        (t / "gate.py").write_text(GATE)
        env = {**os.environ, "COLLECTOR_LOG_LEVEL": "WARNING"}
        servers: list[Server] = []
        try:
            for key in keys:
                port = free_port()
                if key == "bare":
                    cmd = [py, str(t / "bare.py"), str(port)]
                elif key == "gate":
                    cmd = [py, str(t / "gate.py"), str(port), TOKEN]
                else:
                    cmd = [py, "-m", "collector", "serve", "--port", str(port), "--db", str(t / f"{key}.db"),
                           "--ingest-token", TOKEN, "--message-timeout", "86400",
                           "--workers", "2" if key.endswith("-w2") else "0"]
                # the reference's collector package first on the path (its workers inherit it)
                servers.append(Server(key, cmd, port, {**env, "PYTHONPATH": str(Path(args.reference).resolve())}
                                      if key.startswith("reference") else env))
            for srv in servers:
                srv.load(2, conns[0], args, bodies, lua)  # warm-up
            for c in conns:
                for rep in range(args.repeat):
                    for srv in servers:
                        waited = wait_idle(servers)
                        print(f"{srv.name} (c={c}, run {rep + 1}/{args.repeat}): {args.duration} s "
                              f"(after {waited:.1f} s for the servers to be idle) ...", file=sys.stderr, flush=True)
                        res = srv.load(args.duration, c, args, bodies, lua)
                        res["waited_for_idle_s"] = round(waited, 1)
                        srv.runs.setdefault(c, []).append(res)
                        print(f"  {res['requests_per_s']:.0f} req/s, p50 {res['latency_ms']['p50']:.2f} ms, "
                              f"p99 {res['latency_ms']['p99']:.2f} ms, {res['server_cpu_us_per_request']:.0f} us "
                              f"CPU/request, non-2xx {res['non_2xx']}", file=sys.stderr)
        finally:
            for srv in servers:
                srv.stop()
        stored = {}
        for srv in servers:
            if srv.key.startswith("collector"):
                if srv.offset > n_bodies:
                    print(f"warning: {srv.name} got more requests than there are distinct bodies; the repeats "
                          f"were duplicates", file=sys.stderr)
                st = json.loads(subprocess.run([py, "-m", "collector", "status", "--db", str(t / f"{srv.key}.db"),
                                                "--json"], capture_output=True, text=True, check=True).stdout)
                stored[srv.key] = {"fragments_committed": st["fragments"], "open_messages": st["openMessages"],
                                   "messages": st["messages"]}
    by_key = {srv.key: srv for srv in servers}
    levels = []
    for c in conns:
        summ = {srv.key: summary(srv.runs[c]) for srv in servers}
        bare = summ["bare"]
        ratios = {k: round(v["requests_per_s"] / bare["requests_per_s"], 3) for k, v in summ.items() if k != "bare"}
        per_run = {k: [round(r["requests_per_s"] / b["requests_per_s"], 3)
                       for r, b in zip(by_key[k].runs[c], by_key["bare"].runs[c], strict=True)]
                   for k in summ if k != "bare"}
        # CPU per acknowledged uplink over the bare handler's CPU per request, run by run
        # (each run beside the bare handler's run of the same round), and their median
        cpu_per_run = {k: [round(r["server_cpu_us_per_request"] / b["server_cpu_us_per_request"], 3)
                           for r, b in zip(by_key[k].runs[c], by_key["bare"].runs[c], strict=True)]
                       for k in summ if k != "bare"}
        cpu = {k: round(median(v), 3) for k, v in cpu_per_run.items()}
        levels.append({"connections": c, "servers": summ, "ratio": ratios, "ratio_per_run": per_run,
                       "cpu_ratio": cpu, "cpu_ratio_per_run": cpu_per_run})
    result = {
        "benchmark": "ingest throughput with durable commits (TTS webhook bodies, wrk keep-alive)",
        "command": "python reports/bench_ingest.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "parameters": {"duration_s": args.duration, "repeat": args.repeat, "connections": conns,
                       "wrk_threads": args.threads, "json": "orjson (all)", "synchronous": "FULL",
                       "message": "658-byte record in 6 fragments (S=115, DR3)"},
        "servers": {k: SERVERS[k] for k in keys},
        "levels": levels,
        "collector_store": stored,
        "target_ratio": 0.6,
        "target_cpu_ratio": 2.0,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    for lv in levels:
        figures = ", ".join(f"{k} {v['requests_per_s']:.0f}" for k, v in lv["servers"].items())
        ratios = ", ".join(f"{k} {r:.2f}" for k, r in lv["ratio"].items())
        cpu = ", ".join(f"{k} {r:.2f}" for k, r in lv["cpu_ratio"].items())
        print(f"c={lv['connections']}: median req/s {figures}; / bare: {ratios} (reported); "
              f"CPU per uplink / bare: {cpu} (target <= 2.0)", file=sys.stderr)
    print(f"written to {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
