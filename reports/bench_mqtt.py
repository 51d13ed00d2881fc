"""Uplinks/s over MQTT against HTTP webhooks, in the same run, into the same collector.

One ``collector serve`` process takes ChirpStack uplinks both ways: as webhooks
(``POST /uplink/chirpstack?event=up``, ``--connections`` keep-alive connections from
an aiohttp client) and from a Mosquitto broker started for the run (a paho publisher
at QoS 1; the collector's persistent session, PUBACK after the commit). Every
uplink is a distinct fragment (6-fragment messages of many devices), so nothing is a
cheap duplicate. Rounds alternate HTTP, MQTT, HTTP, MQTT, ... (``--repeat`` each) so
load from elsewhere on the machine falls on both alike; the medians are reported
and their ratio (MQTT / HTTP) is the figure of merit.

- HTTP: time from the first request until the last 202 (each answered after its commit).
- MQTT: time from the first publish until the collector counted the last uplink
  accepted (``collector_uplinks_total{integration="mqtt_chirpstack"}``, committed).

Both load generators are Python clients on the same machine: the figures are of the
whole loop, client included. Usage::

    .venv/bin/python reports/bench_mqtt.py [--uplinks 6000] [--repeat 3] [--connections 32]

Writes reports/results/mqtt.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median

import aiohttp

from collector.core import wire
from collector.testing.examples import example_record
from collector.testing.harness import free_port, http, wait_until
from collector.testing.mosquitto import Broker, close, publish_all, publisher
from devicesim.formats import AppUplink, chirpstack_body

TOKEN = "bench"
ROOT = Path(__file__).resolve().parent


def bodies(first_message: int, uplinks: int) -> list[tuple[str, bytes]]:
    """``uplinks`` distinct ChirpStack uplinks (topic, JSON), messages from ``first_message`` on."""
    out: list[tuple[str, bytes]] = []
    m = first_message
    record = wire.encode_record(example_record())
    while len(out) < uplinks:
        dev = f"{0x70B3D57E00000000 + m:016x}"
        for i, f in enumerate(wire.fragment(m % 256, record, 115)):
            body = chirpstack_body(AppUplink(dev, 16, i + 1, f, (1_800_000_000 + m) * 10**9 + i, dr=3, sf=9))
            out.append((f"application/bench/device/{dev}/event/up", json.dumps(body).encode()))
        m += 1
    return out[:uplinks]


def accepted(port: int, integration: str) -> float:
    text = http("GET", f"http://127.0.0.1:{port}/metrics").body.decode()
    m = re.search(rf'^collector_uplinks_total{{integration="{integration}",outcome="accepted"}} (\S+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


async def post_all(port: int, items: list[tuple[str, bytes]], connections: int) -> float:
    url = f"http://127.0.0.1:{port}/uplink/chirpstack?event=up"
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    queue = list(reversed(items))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as session:
        async def worker() -> None:
            while queue:
                _, body = queue.pop()
                async with session.post(url, data=body, headers=headers) as r:
                    if r.status != 202:
                        raise RuntimeError(f"HTTP {r.status}: {await r.text()}")
        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return time.perf_counter() - t0


def mqtt_round(port: int, broker_port: int, items: list[tuple[str, bytes]]) -> float:
    before = accepted(port, "mqtt_chirpstack")
    p = publisher(broker_port, client_id="bench-publisher")
    try:
        t0 = time.perf_counter()
        publish_all(p, items, qos=1)
        wait_until(lambda: accepted(port, "mqtt_chirpstack") >= before + len(items), 300, "the MQTT uplinks",
                   step=0.01)
        return time.perf_counter() - t0
    finally:
        close(p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uplinks", type=int, default=6000, help="uplinks per round")
    ap.add_argument("--repeat", type=int, default=3, help="rounds of each")
    ap.add_argument("--connections", type=int, default=32, help="HTTP connections")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp, Broker(Path(tmp) / "broker") as broker:
        port = free_port()
        log = Path(tmp) / "collector.log"
        proc = subprocess.Popen([sys.executable, "-m", "collector", "serve", "--port", str(port), "--db",
                                 f"{tmp}/c.db", "--ingest-token", TOKEN, "--mqtt-url", broker.url(),
                                 "--message-timeout", "3600", "--log-level", "WARNING"],
                                stdout=subprocess.DEVNULL, stderr=log.open("wb"))
        try:
            wait_until(lambda: http("GET", f"http://127.0.0.1:{port}/healthz").json()["mqtt"]["connected"], 30,
                       "the collector")
            runs: dict[str, list[float]] = {"http": [], "mqtt": []}
            first = 0
            for _ in range(args.repeat):
                for way in ("http", "mqtt"):
                    items = bodies(first, args.uplinks)
                    first += args.uplinks // 6 + 1
                    if way == "http":
                        seconds = asyncio.run(post_all(port, items, args.connections))
                    else:
                        seconds = mqtt_round(port, broker.port, items)
                    runs[way].append(args.uplinks / seconds)
                    print(f"{way}: {args.uplinks / seconds:.0f} uplinks/s", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(30)
    med = {k: median(v) for k, v in runs.items()}
    result = {"uplinks_per_round": args.uplinks, "repeat": args.repeat, "connections": args.connections,
              "runs": runs, "median": med, "ratio_mqtt_over_http": med["mqtt"] / med["http"]}
    (ROOT / "results").mkdir(exist_ok=True)
    (ROOT / "results" / "mqtt.json").write_text(json.dumps(result, indent=2) + "\n")
    print("| way | uplinks/s (median) | runs |\n|---|---|---|")
    for k in ("http", "mqtt"):
        print(f"| {k} | {med[k]:.0f} | {', '.join(f'{v:.0f}' for v in runs[k])} |")
    print(f"\nMQTT / HTTP = {result['ratio_mqtt_over_http']:.2f}")


if __name__ == "__main__":
    main()
