"""``hil send-records`` on whatever module the environment provides: the emulated
RN2903 forwarding to the real collector on loopback, or with ``--hil-port`` the real
module on the bench, whose network server forwards to ``--hil-collector``. Each
record's document at the collector must be the record sent, byte for byte."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from click.testing import CliRunner

from collector.testing.harness import API_TOKEN, INGEST_TOKEN, LiveService
from hil.bridge import Forwarder
from hil.cli import main
from hil.emulator import EmulatorConfig, start_emulator

pytestmark = pytest.mark.timeout(600)
EUI = "70B3D57ED00E2E33"
#: a data rate with few fragments per record in each region
DR = {"US915": 3, "EU868": 5}


@dataclass(frozen=True)
class Target:
    port: str
    module: str
    region: str
    collector: str
    token: str | None
    options: tuple[str, ...]


@pytest.fixture
def target(bench, tmp_path):
    if bench is not None:
        if not bench.collector:
            pytest.skip("--hil-port without --hil-collector: nowhere to check the records")
        yield Target(bench.port, bench.module, bench.region, bench.collector, bench.token, ("--verify-timeout", "300"))
        return
    with LiveService(tmp_path / "collector.db") as service:
        fwd = Forwarder(service.url, "generic", token=INGEST_TOKEN)
        emu = start_emulator("rn2483", EmulatorConfig(region="US915", speed=0, dev_eui=EUI), on_tx=fwd.submit)
        try:
            yield Target(emu.path, "rn2483", "US915", service.url, API_TOKEN,
                         ("--verify-timeout", "20", "--command-timeout", "1.5", "--join-timeout", "2",
                          "--tx-timeout", "1"))
        finally:
            emu.stop()
            fwd.close()


def test_send_records_checks_each_document_at_the_collector(target):
    token = ("--token", target.token) if target.token else ()
    r = CliRunner().invoke(main, [
        "send-records", "--port", target.port, "--module", target.module, "--count", "2",
        "--dr", str(DR[target.region]), "--collector", target.collector, *token, *target.options,
    ])
    assert r.exit_code == 0, r.output
    rows = [line.split() for line in r.stdout.splitlines()[1:]]
    assert len(rows) == 2
    assert all(row[6] == "sent" and row[-4] == "complete" and row[-1] == "match" for row in rows), r.stdout
