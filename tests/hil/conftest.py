"""Fixtures for the radio-rig tests: emulators on real pseudo-terminals, fast
deadlines, and the real collector on loopback."""

from __future__ import annotations

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


@dataclass
class Rig:
    emu: PtyEmulator
    modem: Modem
    faults: Faults

    @property
    def model(self):
        return self.emu.model


@pytest.fixture
def rig_factory() -> Iterator[Callable[..., Rig]]:
    """``rig_factory(module, region=..., **config)`` → an emulator and a driver on its tty."""
    made: list[Rig] = []

    def make(module: str, region: str = "US915", *, policy: RecoveryPolicy = QUICK_RETRY,
             timeouts: Timeouts = FAST, air: Air | None = None, on_tx=None, **config) -> Rig:
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
        rig.emu.stop()


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
