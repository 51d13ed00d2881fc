"""What both module emulators share: the sans-IO model base and the faults.

A model is pure: :meth:`ModuleModel.handle` takes a command line and the time and
returns the output it schedules (:class:`Out`); it never sleeps or reads a clock.
The shell that runs it on a pseudo-terminal, and the air between emulators, are in
:mod:`hil.emulator.pty`.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from collector.core import lorawan
from hil.emulator.channels import ChannelPlan

if TYPE_CHECKING:
    from hil.emulator.pty import Air

log = logging.getLogger("hil.emulator")

FAULTS = (
    "drop_second_reply",  # answer ok to a transmit, then hang (no second reply) until reset
    "busy",  # answer busy / AT_BUSY_ERROR to the next transmit
    "no_free_ch",  # answer no_free_ch / AT_DUTYCYCLE_RESTRICTED to the next transmit
    "garbage",  # emit noise and partial lines before the next reply
    "split_writes",  # write the next replies byte by byte, with pauses
    "reboot",  # reboot in the middle of the next transmit (after the first reply)
    "deny_join",  # deny the next join
    "fcnt_err",  # answer frame_counter_err_rejoin_needed to the next transmit (RN2483)
    "lower_dr",  # after the next transmit, lower the DR by one (as an ADR command would)
    "stray_tx_ok",  # emit a stray "mac_tx_ok" line before the next reply (RN2483)
    "nack",  # the next confirmed uplink gets no acknowledgement
)


@dataclass(frozen=True)
class TxFrame:
    """One uplink an emulated module put on the air."""

    dev_eui: str
    fport: int
    fcnt: int
    payload: bytes
    dr: int
    region: str
    frequency_hz: int
    #: Unix nanoseconds at the end of the transmission
    time_ns: int
    airtime_s: float
    confirmed: bool = False
    #: emulator-wide sequence number (stable ids downstream)
    seq: int = 0


@dataclass(frozen=True)
class Out:
    """Scheduled output: at time ``at``, write ``data`` and/or run ``action(now)``
    (which may schedule more). ``epoch`` drops it when the module was reset."""

    at: float
    data: bytes = b""
    action: Callable[[float], list[Out]] | None = None
    epoch: int = 0


@dataclass
class EmulatorConfig:
    region: str = "EU868"
    #: multiplies every airtime / RX-window delay; 0 = instant (tests)
    speed: float = 1.0
    #: enforce the sub-band duty cycle (EU868) with off-times scaled by duty_scale
    duty_cycle: bool = True
    #: scale of the duty-cycle off time; None = same as ``speed``
    duty_scale: float | None = None
    dev_eui: str = "0004A30B001C0530"
    app_eui: str = "70B3D57ED0000001"
    app_key: str = "2B7E151628AED2A6ABF7158809CF4F3C"
    #: keys already stored in the module (as after ``mac save``)
    provisioned: bool = True
    dr: int | None = None
    #: RSSI/SNR the bench gateway reports
    rssi: float = -60.0
    snr: float = 9.5
    #: US915: the sub-band (1-8) the module starts with enabled, as one set up for
    #: that network; None: all 72 channels, as a module fresh from the factory
    sub_band: int | None = 2


class Faults:
    """One-shot faults to inject, counted per kind; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._n: dict[str, int] = {}

    def inject(self, kind: str, count: int = 1) -> None:
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; known: {', '.join(FAULTS)}")
        with self._lock:
            self._n[kind] = self._n.get(kind, 0) + count

    def take(self, kind: str) -> bool:
        with self._lock:
            if self._n.get(kind, 0) > 0:
                self._n[kind] -= 1
                return True
            return False

    def pending(self) -> dict[str, int]:
        with self._lock:
            return {k: v for k, v in self._n.items() if v}


TxHook = Callable[[TxFrame], None]

#: the network's join-accept delay and the RX windows, seconds after the uplink
JOIN_ACCEPT_DELAY = 5.0
RX1_DELAY = 1.0
RX2_DELAY = 2.0
JOIN_REQUEST_PHY = 23


@dataclass(frozen=True)
class Replies:
    """The words a module answers the shared join / transmit steps with."""

    ok: str
    busy: str
    #: every sub-band closed by the duty cycle
    no_free_ch: str
    #: payload above N of the current data rate
    too_long: str
    joined: str
    denied: str


class ModuleModel:
    """State and replies of one module; subclasses implement :meth:`_command`,
    :meth:`_reboot` and :meth:`_tx_result` and set :attr:`REPLIES`."""

    REPLIES: Replies
    #: the DR after power-on, per region
    DEFAULT_DR: dict[str, int]
    #: the names of DevEUI, AppEUI and AppKey among :attr:`keys`
    OTAA_KEYS: tuple[str, str, str]
    # LoRaWAN state, set by :meth:`_boot`
    dr: int
    fcnt: int
    joined: bool
    hung: bool
    busy_until: float

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        faults: Faults | None = None,
        on_tx: TxHook | None = None,
        wall_ns: Callable[[], int] = time.time_ns,
    ):
        self.config = config
        self.faults = faults or Faults()
        self.on_tx = on_tx
        self.wall_ns = wall_ns
        self.air: Air | None = None
        self.epoch = 0
        self._seq = itertools.count()
        self.region = lorawan.region(config.region)
        self.band_free_at: dict[tuple[int, int], float] = {}
        self.plan = ChannelPlan(self.region, config.sub_band)
        self._channel_rr = 0
        self.tx_log: list[TxFrame] = []
        self._downlinks: list[tuple[int, bytes]] = []
        self._dl_lock = threading.Lock()
        self.split_writes = False
        dev, app, key = self.OTAA_KEYS
        self.keys: dict[str, str] = {dev: config.dev_eui.upper()}
        if config.provisioned:
            self.keys.update({app: config.app_eui.upper(), key: config.app_key.upper()})
        self._boot()
        if config.dr is not None:
            self.dr = config.dr

    def _boot(self) -> None:
        """State after power-on / reset (keys are kept, as after ``mac save``);
        subclasses add their own."""
        self.epoch += 1
        self.dr = self.DEFAULT_DR[self.region.name]
        self.joined = False
        self.hung = False
        self.busy_until = 0.0
        self.fcnt = 0

    # -- building blocks for subclasses

    def line(self, at: float, text: str) -> Out:
        return Out(at, text.encode("ascii") + b"\r\n", epoch=self.epoch)

    def later(self, at: float, action: Callable[[float], list[Out]]) -> Out:
        return Out(at, action=action, epoch=self.epoch)

    def delay(self, seconds: float) -> float:
        return seconds * self.config.speed

    def garbage(self, at: float) -> list[Out]:
        """Noise and partial lines, as a module with a glitching UART produces."""
        return [Out(at, b"\x00\xfe\x8a\x13\r\n", epoch=self.epoch), Out(at, b"ma\r\n", epoch=self.epoch),
                Out(at, b"k\r\n", epoch=self.epoch)]

    def queue_downlink(self, port: int, payload: bytes, *, replace: bool = False) -> None:
        """A downlink the network will send in the RX window after the next uplink
        (``replace``: instead of any still waiting, as a network server's queue with
        replace semantics)."""
        with self._dl_lock:
            if replace:
                self._downlinks.clear()
            self._downlinks.append((port, payload))

    def take_downlink(self) -> tuple[int, bytes] | None:
        with self._dl_lock:
            return self._downlinks.pop(0) if self._downlinks else None

    def pick_channel(self, now: float) -> int | None:
        """An enabled channel of the current DR whose sub-band is open (duty cycle),
        round robin; None if all are closed (or none is enabled)."""
        chans = self.plan.candidates(self.dr)
        for k in range(len(chans)):
            f = chans[(self._channel_rr + k) % len(chans)]
            b = self.region.sub_band(f)
            if not self.config.duty_cycle or self.band_free_at.get((b.low_hz, b.high_hz), 0.0) <= now:
                self._channel_rr = (self._channel_rr + k + 1) % len(chans)
                return f
        return None

    def close_band(self, freq: int, airtime: float, end: float) -> None:
        if not self.config.duty_cycle:
            return
        b = self.region.sub_band(freq)
        scale = self.config.speed if self.config.duty_scale is None else self.config.duty_scale
        self.band_free_at[(b.low_hz, b.high_hz)] = end + lorawan.off_time(airtime, b.duty_cycle) * scale

    def emit_tx(self, frame: TxFrame) -> None:
        frame = TxFrame(**{**frame.__dict__, "seq": next(self._seq)})
        self.tx_log.append(frame)
        log.info(
            "event=uplink deveui=%s fport=%d fcnt=%d len=%d dr=%d freq=%d",
            frame.dev_eui, frame.fport, frame.fcnt, len(frame.payload), frame.dr, frame.frequency_hz,
        )
        if self.on_tx is not None:
            try:
                self.on_tx(frame)
            except Exception:  # noqa: BLE001 - a failing consumer must not kill the module
                log.exception("event=tx_hook_failed")

    # -- LoRaWAN join and transmit, in the words of :attr:`REPLIES`

    def start_join(self, now: float) -> list[Out]:
        """An OTAA join the module's own checks let through: the join request on a free
        channel, then the join-accept (or the ``deny_join`` fault) after the delay."""
        words = self.REPLIES
        freq = self.pick_channel(now)
        if freq is None:
            return [self.line(now, words.no_free_ch)]
        d = self.region.dr(self.dr)
        air = lorawan.time_on_air(d.sf, d.bw_hz, JOIN_REQUEST_PHY)
        end = now + self.delay(air)
        self.close_band(freq, air, end)
        done = end + self.delay(JOIN_ACCEPT_DELAY)
        self.busy_until = done
        deny = self.faults.take("deny_join")

        def finish(t: float) -> list[Out]:
            if deny:
                return [self.line(t, words.denied)]
            self.joined, self.fcnt = True, 0
            return [self.line(t, words.joined)]

        return [self.line(now, words.ok), self.later(done, finish)]

    def start_tx(self, now: float, port: int, payload: bytes, confirmed: bool, dev_eui: str) -> list[Out]:
        """An uplink the module's own checks let through: the one-shot faults, the
        payload limit of the DR and the duty cycle, then the frame on the air and the
        second reply (:meth:`_tx_result`) after the RX windows."""
        words = self.REPLIES
        if self.faults.take("busy"):
            return [self.line(now, words.busy)]
        if self.faults.take("no_free_ch"):
            return [self.line(now, words.no_free_ch)]
        d = self.region.dr(self.dr)
        if len(payload) > d.max_payload:
            return [self.line(now, words.too_long)]
        freq = self.pick_channel(now)
        if freq is None:
            return [self.line(now, words.no_free_ch)]
        if self.faults.take("drop_second_reply"):
            self.hung = True
            return [self.line(now, words.ok)]
        air = d.time_on_air(len(payload))
        end = now + self.delay(air)
        if self.faults.take("reboot"):
            return [self.line(now, words.ok), self.later(now + self.delay(air / 2), self._reboot)]
        self.close_band(freq, air, end)
        dl = self.take_downlink()
        done = end + self.delay(RX1_DELAY if dl else RX2_DELAY)
        self.busy_until = done
        lower = self.faults.take("lower_dr")
        nack = confirmed and self.faults.take("nack")
        fcnt, dr = self.fcnt, self.dr
        self.fcnt += 1

        def transmit(t: float) -> list[Out]:
            self.emit_tx(TxFrame(
                dev_eui=dev_eui, fport=port, fcnt=fcnt, payload=payload, dr=dr,
                region=self.region.name, frequency_hz=freq, time_ns=self.wall_ns(), airtime_s=air,
                confirmed=confirmed,
            ))
            return []

        def finish(t: float) -> list[Out]:
            if lower and self.dr > 0:
                self.dr -= 1
            return self._tx_result(t, dl, confirmed, nack)

        return [self.line(now, words.ok), self.later(end, transmit), self.later(done, finish)]

    def _reboot(self, t: float) -> list[Out]:
        """Boot again (reset or crash) and return what the module prints then."""
        raise NotImplementedError

    def _tx_result(self, t: float, dl: tuple[int, bytes] | None, confirmed: bool, nack: bool) -> list[Out]:
        """The second reply of a transmit: downlink, acknowledgement or failure."""
        raise NotImplementedError

    # -- interface

    def handle(self, text: str, now: float) -> list[Out]:
        outs = self._command(text, now)
        if outs and self.faults.take("garbage"):
            outs = self.garbage(outs[0].at) + outs
        if self.faults.take("split_writes"):
            self.split_writes = True
        return outs

    def _command(self, text: str, now: float) -> list[Out]:
        raise NotImplementedError

    def on_air(self, sf: int, payload: bytes, now: float) -> list[Out]:
        """A point-to-point frame arrived on the air."""
        return []
