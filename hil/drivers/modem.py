"""The modem interface shared by the RN2483/RN2903 and RAK3172 drivers.

:class:`Modem` runs the recovery loop of :mod:`hil.drivers.policy` over a
:class:`~hil.drivers.link.SerialLink`; the module-specific commands are in the
subclasses. The names of :mod:`hil.drivers.results`, :mod:`hil.drivers.policy` and
:mod:`hil.drivers.link` are importable from here too.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from collector.core import lorawan
from hil.drivers.link import Clock, SerialLink, open_port
from hil.drivers.policy import Counters, Decision, Outcome, RecoveryPolicy, Step, next_step
from hil.drivers.results import (
    ChannelBusy,
    Credentials,
    Downlink,
    JoinDenied,
    ModemError,
    ModemRejected,
    ModemTimeout,
    ModuleInfo,
    NotAcknowledged,
    PayloadTooLong,
    SendResult,
    Timeouts,
)

__all__ = [
    "ChannelBusy", "Clock", "Counters", "Credentials", "Decision", "Downlink", "JoinDenied", "Modem",
    "ModemError", "ModemRejected", "ModemTimeout", "ModuleInfo", "NotAcknowledged", "Outcome",
    "PayloadTooLong", "RecoveryPolicy", "SendResult", "SerialLink", "Sleep", "Step", "Timeouts", "TxAttempt",
    "next_step", "open_port",
]

log = logging.getLogger("hil.modem")

Sleep = Callable[[float], None]


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

    def set_sub_band(self, band: int) -> None:
        """US915: enable only sub-band ``band``'s eight 125 kHz channels and its 500 kHz
        channel, as the network server uses (ValueError in another region)."""
        if self._region().name != "US915":
            raise ValueError(f"sub-bands are a US915 setting; the module is in {self._region().name}")
        if not 1 <= band <= 8:
            raise ValueError(f"US915 sub-band {band} outside 1..8")
        self._write_sub_band(band)

    def _write_sub_band(self, band: int) -> None:
        raise NotImplementedError

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
