"""Fixtures for the radio-rig tests: emulators on real pseudo-terminals, fast
deadlines, and the real collector on loopback.

The tests ask for a modem (``rig_factory``, ``bench_port``) and the environment
decides which: an emulated module by default, or with ``--hil-port URL`` (or
``HIL_PORT``) the real RN2483/RN2903/RAK3172 on that serial URL. Then a test for
another module or region is skipped, a test that injects faults or sets up the
emulator is skipped, and a test that looks inside the emulated module (what went
on the air) runs its driver part and is skipped where that look starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest

from collector.testing.harness import LiveService
from hil.drivers.modem import Modem, RecoveryPolicy, Timeouts
from hil.drivers.rak3172 import RAK3172
from hil.drivers.rn2483 import RN2483
from hil.emulator import Air, EmulatorConfig, Faults, PtyEmulator, start_emulator

#: deadlines small enough for an emulator at speed 0, large enough for a busy CI box
FAST = Timeouts(command=1.5, tx_base=0.6, tx_airtime_factor=0.0, join=1.5, reset=1.5)
QUICK_RETRY = RecoveryPolicy(busy_retries=3, first_delay_s=0.01, factor=2.0, max_delay_s=0.05)
DRIVERS: dict[str, type[Modem]] = {"rn2483": RN2483, "rak3172": RAK3172}


def wait_for(cond: Callable[[], object], timeout: float = 5.0, what: str = "condition") -> object:
    """Poll ``cond`` until it is truthy; fail the test after ``timeout`` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v:
            return v
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


def pytest_addoption(parser: pytest.Parser) -> None:
    g = parser.getgroup("hil", "radio rig (docs/bench.md)")
    g.addoption("--hil-port", default=os.environ.get("HIL_PORT") or None, metavar="URL",
                help="Run the driver and send-records tests on the real module at this serial URL (env HIL_PORT).")
    g.addoption("--hil-module", default=os.environ.get("HIL_MODULE") or None, choices=sorted(DRIVERS),
                help="The module type on --hil-port (env HIL_MODULE; default: detected).")
    g.addoption("--hil-collector", default=os.environ.get("HIL_COLLECTOR") or None, metavar="URL",
                help="The collector the network server forwards the bench module's uplinks to (env HIL_COLLECTOR).")
    g.addoption("--hil-token", default=os.environ.get("HIL_TOKEN") or None,
                help="Bearer token of --hil-collector's API (env HIL_TOKEN).")


@dataclass(frozen=True)
class Bench:
    """The real module the tests run on (``--hil-port``)."""

    port: str
    module: str
    region: str
    dev_eui: str
    collector: str | None
    token: str | None


@pytest.fixture(scope="session")
def bench(pytestconfig: pytest.Config) -> Bench | None:
    """The real module when ``--hil-port`` is given (probed once), else None."""
    port = pytestconfig.getoption("--hil-port")
    if not port:
        return None
    from hil.cli_common import detect_module

    module = pytestconfig.getoption("--hil-module") or detect_module(port)
    if module is None:
        pytest.exit(f"--hil-port {port}: no RN2483/RN2903 or RAK3172 answered", returncode=2)
    with DRIVERS[module](port) as m:
        info = m.probe()
    return Bench(port, module, info.region, info.dev_eui, pytestconfig.getoption("--hil-collector"),
                 pytestconfig.getoption("--hil-token"))


@dataclass
class Rig:
    emu: PtyEmulator | None
    modem: Modem
    injected: Faults | None

    @property
    def faults(self) -> Faults:
        if self.injected is None:
            pytest.skip("injects faults, which needs the emulator (--hil-port)")
        return self.injected

    @property
    def model(self):
        if self.emu is None:
            pytest.skip("the rest of this test looks inside the emulated module (--hil-port)")
        return self.emu.model


#: emulator settings a test may ask for that a real module runs with too
ON_HARDWARE = {"speed", "dr"}


@pytest.fixture
def rig_factory(bench: Bench | None) -> Iterator[Callable[..., Rig]]:
    """``rig_factory(module, region=..., **config)`` → an emulator and a driver on its
    tty; with ``--hil-port`` the real module, when it is that module in that region."""
    made: list[Rig] = []

    def make(module: str, region: str = "US915", *, policy: RecoveryPolicy = QUICK_RETRY,
             timeouts: Timeouts = FAST, air: Air | None = None, on_tx=None, **config) -> Rig:
        if bench is not None:
            if (module, region) != (bench.module, bench.region):
                pytest.skip(f"for a {module} in {region}; the bench module is a {bench.module} in {bench.region}")
            extra = set(config) - ON_HARDWARE
            if air is not None or on_tx is not None or extra:
                pytest.skip(f"sets up the emulator ({', '.join(sorted(extra)) or 'air/on_tx'}); --hil-port")
            modem = DRIVERS[module](bench.port)  # the driver's own deadlines and recovery policy
            modem.probe()
            modem.reset()  # a fresh module for each test, as each emulator is: not joined
            if config.get("dr") is not None:
                modem.set_dr(config["dr"])
            rig = Rig(None, modem, None)
            made.append(rig)
            return rig
        config.setdefault("speed", 0.0)
        faults = Faults()
        emu = start_emulator(module, EmulatorConfig(region=region, **config), faults=faults, air=air, on_tx=on_tx)
        modem = DRIVERS[module](emu.path, timeouts=timeouts, policy=policy)
        rig = Rig(emu, modem, faults)
        made.append(rig)
        return rig

    yield make
    for rig in made:
        rig.modem.close()
        if rig.emu is not None:
            rig.emu.stop()


@pytest.fixture
def emulator_only(bench: Bench | None) -> None:
    """Skip the test on a real module (``--hil-port``): it injects faults."""
    if bench is not None:
        pytest.skip("injects faults, which needs the emulator (--hil-port)")


# --------------------------------------------------------------------------- the real collector


@pytest.fixture
def collector(tmp_path) -> Iterator[LiveService]:
    """The real collector on loopback (real SQLite file, manual clock) with the
    stand-in Web App behind it; its ingest token is ``INGEST_TOKEN``."""
    with LiveService(tmp_path / "collector.db") as service:
        yield service


@pytest.fixture
def messages() -> Callable[[LiveService, str], list[dict]]:
    """``messages(service, dev_eui)``: the collector's messages of a device (its API)."""

    def get(service: LiveService, dev_eui: str) -> list[dict]:
        return service.get(f"/api/messages?device={dev_eui}").json()["messages"]

    return get


@pytest.fixture
def until() -> Callable[..., object]:
    """``until(cond, timeout, what)``: poll a condition with a deadline."""
    return wait_for


@pytest.fixture
def fast() -> Timeouts:
    return FAST


@pytest.fixture
def quick_retry() -> RecoveryPolicy:
    return QUICK_RETRY
