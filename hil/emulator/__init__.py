"""Emulated radio modules on pseudo-terminals (RN2483/RN2903, RAK3172)."""

from __future__ import annotations

from collections.abc import Callable

from hil.emulator.core import (
    FAULTS,
    EmulatorConfig,
    Faults,
    ModuleModel,
    Out,
    TxFrame,
    TxHook,
)
from hil.emulator.pty import Air, PtyEmulator
from hil.emulator.rak3172 import RAK3172Model
from hil.emulator.rn2483 import RN2483Model

MODULES = ("rn2483", "rak3172")

__all__ = [
    "FAULTS", "MODULES", "Air", "EmulatorConfig", "Faults", "ModuleModel", "Out", "PtyEmulator",
    "RAK3172Model", "RN2483Model", "TxFrame", "TxHook", "make_model", "start_emulator",
]


def make_model(module: str, config: EmulatorConfig, **kw) -> ModuleModel:
    """The model of ``module`` (``rn2483`` answers as an RN2903 in US915)."""
    if module == "rn2483":
        return RN2483Model(config, **kw)
    if module == "rak3172":
        return RAK3172Model(config, **kw)
    raise ValueError(f"unknown module {module!r}; known: {', '.join(MODULES)}")


def start_emulator(
    module: str,
    config: EmulatorConfig | None = None,
    *,
    on_tx: TxHook | None = None,
    faults: Faults | None = None,
    air: Air | None = None,
    clock: Callable[[], float] | None = None,
) -> PtyEmulator:
    """Start an emulator thread; ``.path`` is the tty to open, ``.stop()`` ends it."""
    model = make_model(module, config or EmulatorConfig(), on_tx=on_tx, faults=faults)
    kw = {"clock": clock} if clock is not None else {}
    return PtyEmulator(model, air=air, **kw).start()
