"""What a caller of a driver sees: the errors it raises and the results it returns."""

from __future__ import annotations

from dataclasses import dataclass

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
