"""Driver for RAKwireless RAK3172 modules with RUI3 firmware (modems.md)."""

from __future__ import annotations

import logging
import re

from hil.drivers.modem import (
    Downlink,
    Modem,
    ModemError,
    ModemRejected,
    ModemTimeout,
    ModuleInfo,
    Outcome,
    TxAttempt,
)

log = logging.getLogger("hil.rak3172")

BAUD = 115200
ERRORS = {
    "AT_ERROR", "AT_PARAM_ERROR", "AT_BUSY_ERROR", "AT_TEST_PARAM_OVERFLOW", "AT_NO_NETWORK_JOINED",
    "AT_RX_ERROR", "AT_DUTYCYCLE_RESTRICTED", "AT_COMMAND_NOT_FOUND",
}
REPLIES = ERRORS | {"OK"}
#: lines RUI3 prints when it boots (after ATZ, a power cycle or a crash)
BANNER_PREFIXES = ("RAKwireless", "Current Work Mode")
RX_EVENT = re.compile(r"^\+EVT:RX_[12C]:(-?\d+(?:\.\d+)?):(-?\d+(?:\.\d+)?):[A-Z]+:(\d{1,3}):([0-9A-Fa-f]*)\Z")
BAND_REGION = {4: "EU868", 5: "US915"}
REGION_BAND = {v: k for k, v in BAND_REGION.items()}
TX_FIRST_OUTCOME = {
    "AT_BUSY_ERROR": Outcome.BUSY,
    "AT_DUTYCYCLE_RESTRICTED": Outcome.BUSY,
    "AT_NO_NETWORK_JOINED": Outcome.NOT_JOINED,
    # above N for the DR; the driver re-reads the DR to tell it from a bad port
    "AT_PARAM_ERROR": Outcome.TOO_LONG,
}


def is_banner(line: str) -> bool:
    return line.startswith(BANNER_PREFIXES)


def is_unsolicited(line: str) -> bool:
    return line.startswith("+EVT:")


class RAK3172(Modem):
    """RAK3172 (RUI3) over ``url`` (a device path or any pyserial URL)."""

    model = "rak3172"
    baudrate = BAUD
    is_unsolicited = staticmethod(is_unsolicited)
    #: the AT+CFM setting this driver last made (None: unknown, e.g. after a reboot)
    _cfm: bool | None = None

    # -- plumbing

    def _at(self, text: str, timeout: float | None = None) -> str:
        """Send an AT command; the reply ``OK`` or one of the error strings."""
        return self.link.command(text, REPLIES, self.timeouts.command if timeout is None else timeout)

    def _set(self, text: str) -> None:
        reply = self._at(text)
        if reply != "OK":
            raise ModemRejected(text, reply)

    def query(self, name: str) -> str:
        """``AT+<name>=?`` → the value of the ``AT+<name>=<value>`` line (then ``OK``)."""
        cmd = f"AT+{name}=?"
        prefix = f"AT+{name}="
        line = self.link.command(
            cmd, lambda ln: (ln.startswith(prefix) and ln != cmd) or ln in ERRORS, self.timeouts.command
        )
        if line in ERRORS:
            raise ModemRejected(cmd, line)
        ok = self.link.wait(REPLIES, self.timeouts.command, cmd)
        if ok != "OK":
            raise ModemRejected(cmd, ok)
        return line[len(prefix):]

    def _band_region(self) -> str:
        band = self.query("BAND")
        try:
            return BAND_REGION[int(band)]
        except (ValueError, KeyError):
            raise ModemError(f"module is set to band {band!r}; this driver knows 4 (EU868) and 5 (US915)") from None

    # -- interface

    def probe(self) -> ModuleInfo:
        self._set("AT")
        ver = self.query("VER")
        dev = self.query("DEVEUI")
        if self.region is None:
            self.region = self._band_region()
        dr = self.get_dr()
        joined = self.query("NJS") == "1"
        region = self._region()
        return ModuleInfo(
            model="RAK3172", firmware=ver, dev_eui=dev.upper(), region=region.name, dr=dr,
            max_payload=region.dr(dr).max_payload, joined=joined,
        )

    def dev_eui(self) -> str:
        return self.query("DEVEUI").upper()

    def set_band(self, region: str) -> None:
        self._set(f"AT+BAND={REGION_BAND[region.upper()]}")
        self.region = region.upper()

    def _read_dr(self) -> int:
        value = self.query("DR")
        try:
            return int(value)
        except ValueError:
            raise ModemError(f"AT+DR=? answered {value!r}, not a number") from None

    def _write_dr(self, dr: int) -> None:
        self._set(f"AT+DR={dr}")

    def set_adr(self, on: bool) -> None:
        self._set(f"AT+ADR={int(on)}")

    def _write_sub_band(self, band: int) -> None:
        self._set(f"AT+MASK={1 << (band - 1):04X}")  # one bit per sub-band

    def _join_once(self, mode: str) -> Outcome:
        cr = self.credentials
        self._set(f"AT+NJM={1 if mode == 'otaa' else 0}")
        if mode == "abp":
            return Outcome.SENT  # RUI3 needs no join in ABP: the stored keys are used directly
        if cr.dev_eui:
            self._set(f"AT+DEVEUI={cr.dev_eui}")
        if cr.app_eui:
            self._set(f"AT+APPEUI={cr.app_eui}")
        if cr.app_key:
            self._set(f"AT+APPKEY={cr.app_key}")
        cmd = "AT+JOIN=1:0:10:1"
        reply = self._at(cmd)
        if reply == "AT_BUSY_ERROR":
            return Outcome.BUSY
        if reply != "OK":
            raise ModemRejected(cmd, reply)
        event = self.link.wait(
            lambda ln: ln.startswith(("+EVT:JOINED", "+EVT:JOIN_FAILED")), self.timeouts.join, cmd
        )
        return Outcome.SENT if event.startswith("+EVT:JOINED") else Outcome.NACK

    def _tx_once(self, port: int, data: bytes, confirmed: bool) -> TxAttempt:
        phase2 = self.timeouts.tx(self.airtime(len(data)))  # before the command: it may ask the module
        try:
            if self._cfm is not confirmed:
                self._set(f"AT+CFM={int(confirmed)}")
                self._cfm = confirmed
            cmd = f"AT+SEND={port}:{data.hex().upper()}"
            first = self.link.command(cmd, lambda ln: ln in REPLIES or is_banner(ln), self.timeouts.command)
        except ModemTimeout:
            return TxAttempt(Outcome.NO_FIRST_REPLY)
        if is_banner(first):
            self._cfm = None
            return TxAttempt(Outcome.REBOOTED, first)
        if first != "OK":
            return TxAttempt(TX_FIRST_OUTCOME.get(first, Outcome.REJECTED), first)
        deadline = self.link.clock() + phase2
        downlinks: list[Downlink] = []

        def accept(line: str) -> bool:
            return line.startswith(("+EVT:TX_DONE", "+EVT:SEND_CONFIRMED", "+EVT:RX_")) or is_banner(line)

        while True:
            try:
                line = self.link.wait(accept, max(0.0, deadline - self.link.clock()), cmd)
            except ModemTimeout:
                return TxAttempt(Outcome.NO_SECOND_REPLY, downlinks=downlinks)
            if line.startswith("+EVT:RX_"):
                dl = self._parse_downlink(line)
                if dl is not None:
                    downlinks.append(dl)
                continue
            if is_banner(line):
                self._cfm = None
                return TxAttempt(Outcome.REBOOTED, line, downlinks)
            if line.startswith("+EVT:SEND_CONFIRMED_FAILED"):
                return TxAttempt(Outcome.NACK, line, downlinks)
            acked = True if line.startswith("+EVT:SEND_CONFIRMED_OK") else None
            return TxAttempt(Outcome.SENT, line, downlinks, acked)

    def _reset(self) -> None:
        self._cfm = None
        self.link.flush()
        self.link.write_line("ATZ")
        try:
            self.link.wait(lambda ln: ln.startswith("Current Work Mode"), self.timeouts.reset, "ATZ")
        except ModemTimeout:
            log.warning("event=no_banner port=%s after=ATZ", self.link.name)
        self._set("AT")

    def _parse_downlink(self, line: str) -> Downlink | None:
        m = RX_EVENT.match(line)
        if not m:
            return None
        return Downlink(int(m.group(3)), bytes.fromhex(m.group(4)), float(m.group(1)), float(m.group(2)))
