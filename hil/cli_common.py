"""What the ``hil`` commands share: options, opening a module, clean interruption."""

from __future__ import annotations

import signal
import threading

import click

from hil.drivers.modem import Credentials, Modem, ModemError, Timeouts
from hil.drivers.rak3172 import RAK3172
from hil.drivers.rn2483 import RN2483

MODULE_CHOICE = click.Choice(["rn2483", "rak3172"])


# --------------------------------------------------------------------------- shared options


def port_option(f):
    return click.option("--port", required=True, help="Serial port: a device path or a pyserial URL.")(f)


def module_option(required: bool = True):
    return click.option("--module", type=MODULE_CHOICE, required=required,
                        help="Module type (probe detects it when left out).")


def sub_band_option(f):
    return click.option("--sub-band", default=None, type=click.IntRange(1, 8),
                        help="US915: enable only this sub-band's channels before joining (TTS: 2).")(f)


def key_options(f):
    f = click.option("--app-key", default=None, help="OTAA AppKey (32 hex) to write before joining.")(f)
    f = click.option("--app-eui", default=None, help="OTAA AppEUI/JoinEUI (16 hex) to write before joining.")(f)
    f = click.option("--dev-eui", default=None, help="DevEUI (16 hex) to write before joining.")(f)
    return f


def timeout_options(f):
    f = click.option("--tx-timeout", default=6.0, show_default=True, type=float,
                     help="Seconds beyond twice the airtime to wait for a transmit's second reply.")(f)
    f = click.option("--join-timeout", default=15.0, show_default=True, type=float,
                     help="Seconds to wait for a join's outcome.")(f)
    f = click.option("--command-timeout", default=2.0, show_default=True, type=float,
                     help="Seconds to wait for a command's first reply.")(f)
    return f


def open_modem(module: str | None, port: str, *, credentials: Credentials | None = None,
               timeouts: Timeouts | None = None) -> Modem:
    """Open ``port`` as ``module``; with None, detect the module type."""
    if module == "rn2483":
        return RN2483(port, credentials=credentials, timeouts=timeouts)
    if module == "rak3172":
        return RAK3172(port, credentials=credentials, timeouts=timeouts)
    detected = detect_module(port)
    if detected is None:
        raise ModemError(f"no RN2483/RN2903 or RAK3172 answered on {port}")
    return open_modem(detected, port, credentials=credentials, timeouts=timeouts)


def detect_module(port: str, timeout: float = 1.0) -> str | None:
    """``rn2483`` when ``sys get ver`` at 57600 baud gets a version line, ``rak3172``
    when ``AT`` at 115200 baud gets ``OK``; None otherwise."""
    from hil.drivers.rn2483 import VERSION

    with RN2483(port, timeouts=Timeouts(command=timeout)) as m:
        try:
            if VERSION.match(m.link.command("sys get ver", lambda line: bool(line.strip()), timeout)):
                return "rn2483"
        except ModemError:
            pass
    with RAK3172(port, timeouts=Timeouts(command=timeout)) as m:
        try:
            if m.link.command("AT", {"OK"}, timeout) == "OK":
                return "rak3172"
        except ModemError:
            pass
    return None


def fail(e: Exception) -> None:
    raise click.ClickException(str(e))


def timeouts(command_timeout: float, join_timeout: float, tx_timeout: float) -> Timeouts:
    return Timeouts(command=command_timeout, join=join_timeout, tx_base=tx_timeout)


class Interrupted:
    """SIGINT/SIGTERM set an event so long commands stop cleanly (exit 0)."""

    def __init__(self) -> None:
        self.event = threading.Event()

    def __enter__(self) -> threading.Event:
        self._old = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        return self.event

    def _handler(self, signum, frame) -> None:
        self.event.set()

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


