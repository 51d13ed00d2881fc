"""The modem interface shared by the RN2483/RN2903 and RAK3172 drivers.

Three layers:

* result types and exceptions (what a caller sees);
* the recovery policy (:class:`RecoveryPolicy`, :func:`next_step`): a pure function
  of the outcome of one transmit attempt and the counters so far, so every rule of
  the issue (bounded retry on ``busy``/``no_free_ch``, reset + rejoin on a missing
  second reply, rejoin on ``frame_counter_err_rejoin_needed``, re-fragmenting on
  ``invalid_data_len``) is tested without a serial port;
* :class:`SerialLink`, the thin serial shell: a buffered reader that splits on
  ``\\r\\n``, exact reply matching with one deadline per reply phase, a flush of stale
  input before each command that keeps unsolicited lines (downlinks, events).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import serial

from collector.core import lorawan

log = logging.getLogger("hil.modem")

Clock = Callable[[], float]
Sleep = Callable[[float], None]


# --------------------------------------------------------------------------- errors


class ModemError(Exception):
    """Any failure talking to a module; the message names the problem."""


class ModemTimeout(ModemError):
    """No acceptable reply within the phase's deadline."""


class ModemRejected(ModemError):
    """The module answered a command with an error reply."""

    def __init__(self, command: str, reply: str, detail: str = ""):
        super().__init__(f"{command!r} answered {reply!r}" + (f": {detail}" if detail else ""))
        self.command = command
        self.reply = reply


class JoinDenied(ModemError):
    """The network did not accept the join (``denied`` / ``+EVT:JOIN_FAILED...``)."""


class ChannelBusy(ModemError):
    """``busy`` / ``no_free_ch`` / duty-cycle refusals outlasted the retry bound."""


class PayloadTooLong(ModemError):
    """The payload is above N of the module's current data rate; re-read the DR
    (done by the driver before raising) and re-fragment."""

    def __init__(self, length: int, max_payload: int, dr: int):
        super().__init__(f"payload of {length} bytes is above N={max_payload} of DR{dr}")
        self.length = length
        self.max_payload = max_payload
        self.dr = dr


class NotAcknowledged(ModemError):
    """A confirmed uplink got no acknowledgement (``mac_err`` / ``SEND_CONFIRMED_FAILED``)."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Downlink:
    port: int
    payload: bytes
    rssi: float | None = None
    snr: float | None = None


@dataclass(frozen=True)
class SendResult:
    #: the downlinks received in the RX windows of this uplink
    downlinks: tuple[Downlink, ...] = ()
    #: transmit attempts it took (1 = first try)
    attempts: int = 1
    resets: int = 0
    rejoins: int = 0
    acked: bool | None = None

    @property
    def downlink(self) -> Downlink | None:
        return self.downlinks[0] if self.downlinks else None


@dataclass(frozen=True)
class ModuleInfo:
    model: str
    firmware: str
    dev_eui: str
    region: str
    dr: int
    max_payload: int
    hw_eui: str = ""
    joined: bool | None = None

    def rows(self) -> list[tuple[str, str]]:
        return [
            ("model", self.model),
            ("firmware", self.firmware),
            ("hweui", self.hw_eui or "-"),
            ("deveui", self.dev_eui),
            ("region", self.region),
            ("dr", str(self.dr)),
            ("max_payload", str(self.max_payload)),
            ("joined", "-" if self.joined is None else ("yes" if self.joined else "no")),
        ]


@dataclass(frozen=True)
class Credentials:
    """OTAA keys written before a join (hex strings); None: use what the module holds."""

    dev_eui: str | None = None
    app_eui: str | None = None
    app_key: str | None = None


@dataclass(frozen=True)
class Timeouts:
    """Deadlines per reply phase, seconds."""

    #: first reply to any command
    command: float = 2.0
    #: second reply of a transmit: ``tx_base + tx_airtime_factor * airtime`` (the RX
    #: windows close 2 s after the uplink; the rest is margin)
    tx_base: float = 6.0
    tx_airtime_factor: float = 2.0
    #: second reply of a join (join-accept delay 5-6 s plus airtime)
    join: float = 15.0
    #: the boot banner after a reset
    reset: float = 5.0

    def tx(self, airtime_s: float) -> float:
        return self.tx_base + self.tx_airtime_factor * airtime_s


# --------------------------------------------------------------------------- recovery policy


class Outcome(enum.Enum):
    SENT = "sent"
    BUSY = "busy"  # busy / no_free_ch / AT_BUSY_ERROR / AT_DUTYCYCLE_RESTRICTED
    NO_FIRST_REPLY = "no_first_reply"
    NO_SECOND_REPLY = "no_second_reply"
    REBOOTED = "rebooted"  # a boot banner arrived while waiting
    NOT_JOINED = "not_joined"
    REJOIN_NEEDED = "rejoin_needed"  # frame_counter_err_rejoin_needed
    TOO_LONG = "too_long"  # invalid_data_len / AT_PARAM_ERROR above N
    REJECTED = "rejected"  # any other error reply
    NACK = "nack"  # confirmed uplink not acknowledged


class Step(enum.Enum):
    DONE = "done"
    WAIT_RETRY = "wait_retry"
    RESET_REJOIN = "reset_rejoin"
    REJOIN = "rejoin"
    REFRAGMENT = "refragment"
    FAIL = "fail"


@dataclass(frozen=True)
class RecoveryPolicy:
    #: retries after busy/no_free_ch before giving up; the default waits up to about
    #: 12 minutes in all, more than the 1 % off-time after the longest EU868 frame
    #: (51 bytes at SF12: 2.8 s on air, 277 s off)
    busy_retries: int = 12
    first_delay_s: float = 1.0
    factor: float = 2.0
    max_delay_s: float = 120.0
    #: module resets (+ rejoin) per send after a missing reply or a reboot
    max_resets: int = 1
    #: rejoins per send after not_joined / frame_counter_err_rejoin_needed
    max_rejoins: int = 1
    #: join attempts before JoinDenied / ChannelBusy
    join_attempts: int = 2

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (0-based)."""
        return min(self.max_delay_s, self.first_delay_s * self.factor**retry)

    def worst_case_wait(self) -> float:
        return sum(self.delay(i) for i in range(self.busy_retries))


@dataclass
class Counters:
    busy: int = 0
    resets: int = 0
    rejoins: int = 0
    attempts: int = 0


@dataclass(frozen=True)
class Decision:
    step: Step
    delay_s: float = 0.0
    reason: str = ""


def next_step(outcome: Outcome, c: Counters, policy: RecoveryPolicy) -> Decision:
    """What to do after one transmit attempt. Pure: the caller updates ``c``."""
    if outcome is Outcome.SENT:
        return Decision(Step.DONE)
    if outcome is Outcome.BUSY:
        if c.busy < policy.busy_retries:
            return Decision(Step.WAIT_RETRY, policy.delay(c.busy))
        return Decision(Step.FAIL, reason=f"module still busy / no free channel after {c.busy} retries")
    if outcome in (Outcome.NO_FIRST_REPLY, Outcome.NO_SECOND_REPLY, Outcome.REBOOTED):
        if c.resets < policy.max_resets:
            return Decision(Step.RESET_REJOIN)
        what = {
            Outcome.NO_FIRST_REPLY: "no reply to the transmit command",
            Outcome.NO_SECOND_REPLY: "no second reply to the transmit command",
            Outcome.REBOOTED: "the module rebooted during the transmit",
        }[outcome]
        return Decision(Step.FAIL, reason=f"{what}, also after {c.resets} reset(s) and rejoin")
    if outcome in (Outcome.NOT_JOINED, Outcome.REJOIN_NEEDED):
        if c.rejoins < policy.max_rejoins:
            return Decision(Step.REJOIN)
        return Decision(Step.FAIL, reason=f"module needs a join ({outcome.value}) after {c.rejoins} rejoin(s)")
    if outcome is Outcome.TOO_LONG:
        return Decision(Step.REFRAGMENT)
    if outcome is Outcome.NACK:
        return Decision(Step.FAIL, reason="confirmed uplink not acknowledged")
    return Decision(Step.FAIL, reason="module rejected the transmit")


# --------------------------------------------------------------------------- serial shell


def open_port(url: str, baudrate: int) -> serial.SerialBase:
    """Open ``url`` with :func:`serial.serial_for_url`; exclusive access for device paths."""
    kwargs: dict = {"baudrate": baudrate, "timeout": 0.02, "write_timeout": 2.0}
    if "://" not in url:
        kwargs["exclusive"] = True
    try:
        return serial.serial_for_url(url, **kwargs)
    except (serial.SerialException, OSError, ValueError) as e:
        raise ModemError(f"cannot open serial port {url}: {e}") from None


class SerialLink:
    """Line I/O on a serial port with per-phase deadlines.

    ``is_unsolicited(line)`` says which lines are kept in :attr:`unsolicited` when
    they turn up outside the reply being waited for (downlinks, ``+EVT:`` events).
    """

    def __init__(
        self,
        port: serial.SerialBase,
        *,
        is_unsolicited: Callable[[str], bool] = lambda line: False,
        clock: Clock = time.monotonic,
        name: str = "",
    ):
        self.port = port
        self.is_unsolicited = is_unsolicited
        self.clock = clock
        self.name = name or getattr(port, "port", "") or "port"
        self._buf = bytearray()
        self.unsolicited: deque[str] = deque(maxlen=1000)
        #: lines that were neither the awaited reply nor unsolicited (diagnostics)
        self.ignored: deque[str] = deque(maxlen=100)

    # -- reading

    def _fill(self, wait: bool = True) -> None:
        """Append what the port has to the buffer: with ``wait``, the next byte (up to
        the port's read timeout) and what came with it; else only what is waiting."""
        try:
            data = self.port.read(1) if wait else b""
            if data or not wait:
                waiting = self.port.in_waiting
                if waiting:
                    data += self.port.read(waiting)
        except (serial.SerialException, OSError) as e:
            raise ModemError(f"serial port {self.name} failed: {e}") from None
        self._buf += data

    def _pop_line(self) -> str | None:
        idx = self._buf.find(b"\r\n")
        if idx < 0:
            return None
        raw = bytes(self._buf[:idx])
        del self._buf[: idx + 2]
        return raw.decode("ascii", errors="replace")

    def read_line(self, deadline: float) -> str | None:
        """The next complete line, or None when ``deadline`` (clock time) passes."""
        while True:
            line = self._pop_line()
            if line is not None:
                return line
            if self.clock() >= deadline:
                return None
            self._fill()

    def _keep_or_ignore(self, line: str, context: str) -> None:
        if self.is_unsolicited(line):
            log.info("event=unsolicited port=%s line=%r", self.name, line)
            self.unsolicited.append(line)
        else:
            log.info("event=ignored port=%s while=%r line=%r", self.name, context, line)
            self.ignored.append(line)

    def flush(self) -> None:
        """Drain input that arrived before the next command: keep unsolicited lines,
        drop the rest (and any partial line) so it cannot answer the wrong command."""
        self._fill(wait=False)
        while (line := self._pop_line()) is not None:
            self._keep_or_ignore(line, "flush")
        if self._buf:
            log.info("event=partial_dropped port=%s bytes=%r", self.name, bytes(self._buf))
            self._buf.clear()

    def wait(self, accept: Callable[[str], bool] | Collection[str], timeout: float, context: str) -> str:
        """The first line ``accept`` takes (a predicate or a set of exact lines) within
        ``timeout`` seconds; other lines are kept (unsolicited) or ignored."""
        pred = accept if callable(accept) else accept.__contains__
        deadline = self.clock() + timeout
        while True:
            line = self.read_line(deadline)
            if line is None:
                raise ModemTimeout(f"no reply to {context!r} within {timeout:g} s on {self.name}")
            if pred(line):
                log.debug("event=reply port=%s to=%r line=%r", self.name, context, line)
                return line
            self._keep_or_ignore(line, context)

    # -- writing

    def write_line(self, text: str) -> None:
        log.debug("event=send port=%s line=%r", self.name, text)
        self.write_raw(text.encode("ascii") + b"\r\n")

    def command(self, text: str, accept: Callable[[str], bool] | Collection[str], timeout: float) -> str:
        """Flush stale input, send ``text``, return its (first) reply."""
        self.flush()
        self.write_line(text)
        return self.wait(accept, timeout, text)

    def write_raw(self, data: bytes) -> None:
        try:
            self.port.write(data)
            self.port.flush()
        except (serial.SerialException, OSError) as e:
            raise ModemError(f"cannot write to serial port {self.name}: {e}") from None

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self.port.close()


# --------------------------------------------------------------------------- interface


@dataclass
class TxAttempt:
    outcome: Outcome
    reply: str = ""
    downlinks: list[Downlink] = field(default_factory=list)
    acked: bool | None = None


class Modem(ABC):
    """A LoRaWAN module behind a serial port.

    Subclasses implement the module's commands (``_tx_once``, ``join``, ...); the
    recovery loop in :meth:`send` is shared and driven by :func:`next_step`.
    """

    model = "modem"
    #: the module's default UART rate (set by each driver)
    baudrate: int

    def __init__(
        self,
        url: str,
        *,
        region: str | None = None,
        timeouts: Timeouts | None = None,
        policy: RecoveryPolicy | None = None,
        credentials: Credentials | None = None,
        clock: Clock = time.monotonic,
        sleep: Sleep = time.sleep,
        baudrate: int | None = None,
    ):
        """Open ``url`` (a device path or any pyserial URL) at ``baudrate`` (default:
        the module's); raises :class:`ModemError` naming the port when it cannot."""
        port = open_port(url, self.baudrate if baudrate is None else baudrate)
        self.link = SerialLink(port, is_unsolicited=self.is_unsolicited, clock=clock, name=url)
        self.region = region.upper() if region else None
        self.timeouts = timeouts or Timeouts()
        self.policy = policy or RecoveryPolicy()
        self.credentials = credentials or Credentials()
        self.sleep = sleep
        #: the DR set through :meth:`set_dr`, re-applied after a reset
        self._wanted_dr: int | None = None
        self._dr: int | None = None
        self._join_mode = "otaa"
        self._downlinks: deque[Downlink] = deque()

    # -- module specific

    @staticmethod
    def is_unsolicited(line: str) -> bool:
        """Whether ``line`` is one the module prints on its own (downlinks, events),
        kept when it turns up between replies."""
        return False

    @abstractmethod
    def probe(self) -> ModuleInfo: ...

    @abstractmethod
    def _join_once(self, mode: str) -> Outcome: ...

    @abstractmethod
    def _read_dr(self) -> int: ...

    @abstractmethod
    def _write_dr(self, dr: int) -> None: ...

    @abstractmethod
    def _tx_once(self, port: int, data: bytes, confirmed: bool) -> TxAttempt: ...

    @abstractmethod
    def _reset(self) -> None: ...

    @abstractmethod
    def _parse_downlink(self, line: str) -> Downlink | None: ...

    # -- shared

    def _region(self) -> lorawan.Region:
        if self.region is None:
            self.probe()
        assert self.region is not None
        return lorawan.region(self.region)

    def get_dr(self) -> int:
        self._dr = self._read_dr()
        return self._dr

    def set_dr(self, dr: int) -> None:
        self._region().dr(dr)  # ValueError naming the problem for a DR the region lacks
        self._write_dr(dr)
        self._wanted_dr = dr
        self._dr = dr

    def max_payload(self) -> int:
        """N of the module's current data rate (read from the module)."""
        return self._region().dr(self.get_dr()).max_payload

    def airtime(self, length: int) -> float:
        dr = self._dr if self._dr is not None else self.get_dr()
        return self._region().dr(dr).time_on_air(length)

    def join(self, mode: str = "otaa") -> None:
        """Join the network; raises :class:`JoinDenied` / :class:`ChannelBusy` /
        :class:`ModemTimeout` / :class:`ModemRejected`."""
        if mode not in ("otaa", "abp"):
            raise ValueError(f"join mode {mode!r}; use otaa or abp")
        self._join_mode = mode
        busy = 0
        denied = 0
        while True:
            outcome = self._join_once(mode)
            if outcome is Outcome.SENT:
                log.info("event=joined port=%s mode=%s", self.link.name, mode)
                if self._wanted_dr is not None:
                    self._write_dr(self._wanted_dr)
                return
            if outcome is Outcome.BUSY:
                if busy >= self.policy.busy_retries:
                    raise ChannelBusy(f"join refused as busy / no free channel {busy + 1} times")
                self.sleep(self.policy.delay(busy))
                busy += 1
                continue
            if outcome is Outcome.NACK:
                denied += 1
                if denied >= self.policy.join_attempts:
                    raise JoinDenied(f"join denied by the network ({denied} attempt(s))")
                continue
            raise ModemError(f"join failed: {outcome.value}")

    def reset(self) -> None:
        """Reset the module and re-apply the settings this driver made (not the join)."""
        log.warning("event=reset port=%s", self.link.name)
        self._reset()
        self._dr = None
        if self._wanted_dr is not None:
            self._write_dr(self._wanted_dr)
            self._dr = self._wanted_dr

    def send(self, port: int, data: bytes, confirmed: bool = False) -> SendResult:
        """Send one uplink, recovering per :class:`RecoveryPolicy`.

        Raises :class:`PayloadTooLong` (the DR was re-read: re-fragment),
        :class:`ChannelBusy`, :class:`ModemTimeout`, :class:`NotAcknowledged` or
        :class:`ModemRejected`; never blocks beyond the bounded retries.
        """
        if not 1 <= port <= 223:
            raise ValueError(f"FPort {port} outside 1..223")
        if not data:
            raise ValueError("empty payload")
        c = Counters()
        while True:
            c.attempts += 1
            attempt = self._tx_once(port, data, confirmed)
            self._downlinks.extend(attempt.downlinks)
            d = next_step(attempt.outcome, c, self.policy)
            log.info(
                "event=tx port=%s fport=%d len=%d outcome=%s step=%s",
                self.link.name, port, len(data), attempt.outcome.value, d.step.value,
            )
            if d.step is Step.DONE:
                return SendResult(tuple(attempt.downlinks), c.attempts, c.resets, c.rejoins, attempt.acked)
            if d.step is Step.WAIT_RETRY:
                self.sleep(d.delay_s)
                c.busy += 1
            elif d.step is Step.RESET_REJOIN:
                c.resets += 1
                self.reset()
                self.join(self._join_mode)
            elif d.step is Step.REJOIN:
                c.rejoins += 1
                self.join(self._join_mode)
            elif d.step is Step.REFRAGMENT:
                dr = self.get_dr()
                n = self._region().dr(dr).max_payload
                if len(data) <= n:
                    raise ModemRejected("send", attempt.reply, f"payload of {len(data)} bytes fits N={n} of DR{dr}")
                raise PayloadTooLong(len(data), n, dr)
            elif attempt.outcome is Outcome.BUSY:
                raise ChannelBusy(d.reason)
            elif attempt.outcome is Outcome.NACK:
                raise NotAcknowledged(d.reason)
            elif attempt.outcome in (Outcome.NO_FIRST_REPLY, Outcome.NO_SECOND_REPLY, Outcome.REBOOTED):
                raise ModemTimeout(d.reason)
            else:
                raise ModemRejected("send", attempt.reply, d.reason)

    def downlinks(self) -> list[Downlink]:
        """Every downlink received so far (in RX windows or found among unsolicited
        lines), oldest first; drains the queue."""
        while self.link.unsolicited:
            line = self.link.unsolicited.popleft()
            dl = self._parse_downlink(line)
            if dl is not None:
                self._downlinks.append(dl)
        out = list(self._downlinks)
        self._downlinks.clear()
        return out

    def close(self) -> None:
        self.link.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
