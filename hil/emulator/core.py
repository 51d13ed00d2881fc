"""What both module emulators share: the sans-IO model base, faults, the shared
"air" for point-to-point frames, and the pseudo-terminal shell that runs a model.

A model is pure: :meth:`ModuleModel.handle` takes a command line and the time and
returns the output it schedules (:class:`Out`); it never sleeps or reads a clock.
:class:`PtyEmulator` is the shell: a real pseudo-terminal (raw mode), a background
thread, and a heap of scheduled outputs.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import pty
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass

from collector.core import lorawan
from hil.emulator.channels import ChannelPlan

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


class Air:
    """The shared medium for point-to-point (``radio tx``/``radio rx``) frames."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._members: list[PtyEmulator] = []

    def attach(self, emu: PtyEmulator) -> None:
        with self._lock:
            self._members.append(emu)

    def detach(self, emu: PtyEmulator) -> None:
        with self._lock:
            if emu in self._members:
                self._members.remove(emu)

    def broadcast(self, sender: ModuleModel, sf: int, payload: bytes) -> None:
        with self._lock:
            members = list(self._members)
        for emu in members:
            if emu.model is not sender:
                emu.post(lambda now, m=emu.model: m.on_air(sf, payload, now))


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


class PtyEmulator:
    """Runs a :class:`ModuleModel` on the far end of a pseudo-terminal."""

    def __init__(self, model: ModuleModel, *, clock: Callable[[], float] = time.monotonic, air: Air | None = None):
        self.model = model
        self.clock = clock
        self.air = air
        model.air = air
        self._master, self._slave = pty.openpty()
        tty.setraw(self._slave)
        tty.setraw(self._master)
        os.set_blocking(self._master, False)
        self.path = os.ttyname(self._slave)
        self._wake_r, self._wake_w = os.pipe()
        self._heap: list[tuple[float, int, Out]] = []
        self._seq = itertools.count()
        self._posted: list[Callable[[float], list[Out]]] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"emulator {self.path}", daemon=True)
        self.commands: list[str] = []

    def start(self) -> PtyEmulator:
        if self.air is not None:
            self.air.attach(self)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self.air is not None:
            self.air.detach(self)
        self._stop.set()
        os.write(self._wake_w, b"x")
        self._thread.join(timeout=5)
        for fd in (self._master, self._slave, self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)

    def __enter__(self) -> PtyEmulator:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def post(self, fn: Callable[[float], list[Out]]) -> None:
        """Run ``fn(now)`` in the emulator thread and schedule what it returns."""
        with self._lock:
            self._posted.append(fn)
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"p")

    def write_now(self, data: bytes) -> None:
        """Put raw bytes on the line (unsolicited output), from any thread."""
        self.post(lambda now: [Out(now, data, epoch=self.model.epoch)])

    def _schedule(self, outs: list[Out]) -> None:
        for o in outs:
            heapq.heappush(self._heap, (o.at, next(self._seq), o))

    def _write(self, data: bytes) -> None:
        """Write to the line; what does not fit (nobody reads the port) is lost, as
        on a UART, instead of blocking the module."""
        chunks = [data[i : i + 1] for i in range(len(data))] if self.model.split_writes else [data]
        for chunk in chunks:
            view = memoryview(chunk)
            try:
                while view:
                    view = view[os.write(self._master, view):]
            except BlockingIOError:
                log.warning("event=output_dropped path=%s bytes=%d", self.path, len(view))
                return
            except OSError:
                return
            if self.model.split_writes:
                time.sleep(0.002)

    def _run(self) -> None:
        buf = bytearray()
        while not self._stop.is_set():
            now = self.clock()
            while self._heap and self._heap[0][0] <= now:
                _, _, o = heapq.heappop(self._heap)
                if o.epoch != self.model.epoch:
                    continue
                if o.data:
                    self._write(o.data)
                if o.action is not None:
                    self._schedule(o.action(now))
            with self._lock:
                posted, self._posted = self._posted, []
            for fn in posted:
                self._schedule(fn(now))
            if posted:
                continue
            timeout = max(0.0, self._heap[0][0] - self.clock()) if self._heap else 0.5
            try:
                ready, _, _ = select.select([self._master, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            if self._master in ready:
                try:
                    data = os.read(self._master, 4096)
                except OSError:  # includes BlockingIOError
                    data = b""
                buf += data
                while (idx := buf.find(b"\r\n")) >= 0:
                    raw = bytes(buf[:idx]).lstrip(b"\x00\x55")
                    del buf[: idx + 2]
                    text = raw.decode("ascii", errors="replace")
                    self.commands.append(text)
                    log.debug("event=command path=%s line=%r", self.path, text)
                    self._schedule(self.model.handle(text, self.clock()))
