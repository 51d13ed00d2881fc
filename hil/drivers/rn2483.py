"""Driver for Microchip RN2483 (EU868) and RN2903 (US915) modules (modems.md)."""

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

log = logging.getLogger("hil.rn2483")

BAUD = 57600
VERSION = re.compile(r"^(RN2483|RN2903) (\S+) .*\Z")
MAC_RX = re.compile(r"^mac_rx (\d{1,3}) ([0-9A-Fa-f]*)\Z")
RADIO_RX = re.compile(r"^radio_rx  ([0-9A-Fa-f]+)\Z")
HEX16 = re.compile(r"^[0-9A-Fa-f]{16}\Z")
REGION_OF = {"RN2483": "EU868", "RN2903": "US915"}

OK_SET = {"ok", "invalid_param"}
JOIN_FIRST = {"ok", "invalid_param", "keys_not_init", "no_free_ch", "silent", "busy", "mac_paused"}
TX_FIRST = {
    "ok", "invalid_param", "not_joined", "no_free_ch", "silent", "frame_counter_err_rejoin_needed",
    "busy", "mac_paused", "invalid_data_len",
}
TX_FIRST_OUTCOME = {
    "busy": Outcome.BUSY,
    "no_free_ch": Outcome.BUSY,
    "not_joined": Outcome.NOT_JOINED,
    "frame_counter_err_rejoin_needed": Outcome.REJOIN_NEEDED,
    "invalid_data_len": Outcome.TOO_LONG,
    "invalid_param": Outcome.REJECTED,
    "silent": Outcome.REJECTED,
    "mac_paused": Outcome.REJECTED,
}


def is_unsolicited(line: str) -> bool:
    return bool(MAC_RX.match(line) or RADIO_RX.match(line))


class RN2483(Modem):
    """RN2483 / RN2903 over ``url`` (a device path or any pyserial URL)."""

    model = "rn2483"
    baudrate = BAUD
    is_unsolicited = staticmethod(is_unsolicited)
    #: the last version line the module printed
    version = ""

    # -- plumbing

    def _cmd(self, text: str, accept, timeout: float | None = None) -> str:
        return self.link.command(text, accept, self.timeouts.command if timeout is None else timeout)

    def _set(self, text: str) -> None:
        reply = self._cmd(text, OK_SET)
        if reply != "ok":
            raise ModemRejected(text, reply)

    def _get(self, text: str, pattern: re.Pattern[str]) -> str:
        return self._cmd(text, lambda line: bool(pattern.match(line)))

    def autobaud(self) -> None:
        """The module's auto-baud sequence: a break, then 0x55 (modems.md)."""
        try:
            self.link.port.send_break(0.01)
        except Exception:  # noqa: BLE001 - not every transport supports a break
            self.link.write_raw(b"\x00")
        self.link.write_raw(b"\x55")

    def _version(self) -> str:
        try:
            line = self._get("sys get ver", VERSION)
        except ModemTimeout:
            self.autobaud()
            line = self._get("sys get ver", VERSION)
        self._learn_version(line)
        return line

    def _learn_version(self, line: str) -> None:
        self.version = line
        m = VERSION.match(line)
        if m and self.region is None:
            self.region = REGION_OF[m.group(1)]

    # -- interface

    def probe(self) -> ModuleInfo:
        line = self._version()
        m = VERSION.match(line)
        assert m
        hw = self._get("sys get hweui", HEX16)
        dev = self._get("mac get deveui", HEX16)
        dr = self.get_dr()
        region = self._region()
        return ModuleInfo(
            model=m.group(1), firmware=m.group(2), dev_eui=dev.upper(), region=region.name, dr=dr,
            max_payload=region.dr(dr).max_payload, hw_eui=hw.upper(),
        )

    def dev_eui(self) -> str:
        return self._get("mac get deveui", HEX16).upper()

    def _read_dr(self) -> int:
        return int(self._get("mac get dr", re.compile(r"^\d{1,2}\Z")))

    def _write_dr(self, dr: int) -> None:
        self._set(f"mac set dr {dr}")

    def set_adr(self, on: bool) -> None:
        self._set(f"mac set adr {'on' if on else 'off'}")

    def _write_sub_band(self, band: int) -> None:
        # channels 0-63 (125 kHz) eight per sub-band, 64-71 (500 kHz) one per sub-band
        wanted = set(range(8 * (band - 1), 8 * band)) | {63 + band}
        for ch in range(72):
            self._set(f"mac set ch status {ch} {'on' if ch in wanted else 'off'}")

    def _join_once(self, mode: str) -> Outcome:
        cr = self.credentials
        if mode == "otaa":
            if cr.dev_eui:
                self._set(f"mac set deveui {cr.dev_eui}")
            if cr.app_eui:
                self._set(f"mac set appeui {cr.app_eui}")
            if cr.app_key:
                self._set(f"mac set appkey {cr.app_key}")
        cmd = f"mac join {mode}"
        first = self._cmd(cmd, JOIN_FIRST)
        if first in ("busy", "no_free_ch"):
            return Outcome.BUSY
        if first != "ok":
            detail = {"keys_not_init": "keys are not set (mac set deveui/appeui/appkey)",
                      "mac_paused": "the LoRaWAN stack is paused (mac resume)"}.get(first, "")
            raise ModemRejected(cmd, first, detail)
        second = self.link.wait({"accepted", "denied"}, self.timeouts.join, cmd)
        return Outcome.SENT if second == "accepted" else Outcome.NACK

    def _tx_once(self, port: int, data: bytes, confirmed: bool) -> TxAttempt:
        cmd = f"mac tx {'cnf' if confirmed else 'uncnf'} {port} {data.hex().upper()}"
        timeout = self.timeouts.tx(self.airtime(len(data)))  # before the command: it may ask the module
        try:
            first = self._cmd(cmd, lambda line: line in TX_FIRST or bool(VERSION.match(line)))
        except ModemTimeout:
            return TxAttempt(Outcome.NO_FIRST_REPLY)
        if VERSION.match(first):
            return TxAttempt(Outcome.REBOOTED, first)
        if first != "ok":
            return TxAttempt(TX_FIRST_OUTCOME[first], first)

        def second(line: str) -> bool:
            return line in ("mac_tx_ok", "mac_err", "invalid_data_len") or bool(
                MAC_RX.match(line) or VERSION.match(line)
            )

        try:
            reply = self.link.wait(second, timeout, cmd)
        except ModemTimeout:
            return TxAttempt(Outcome.NO_SECOND_REPLY)
        if reply == "mac_tx_ok":
            return TxAttempt(Outcome.SENT, reply, acked=True if confirmed else None)
        if reply == "mac_err":
            return TxAttempt(Outcome.NACK if confirmed else Outcome.REJECTED, reply)
        if reply == "invalid_data_len":
            return TxAttempt(Outcome.TOO_LONG, reply)
        if VERSION.match(reply):
            return TxAttempt(Outcome.REBOOTED, reply)
        dl = self._parse_downlink(reply)
        return TxAttempt(Outcome.SENT, reply, [dl] if dl else [], acked=True if confirmed else None)

    def _reset(self) -> None:
        self._learn_version(self._cmd("sys reset", lambda line: bool(VERSION.match(line)), self.timeouts.reset))

    def _parse_downlink(self, line: str) -> Downlink | None:
        m = MAC_RX.match(line)
        if not m:
            return None
        return Downlink(int(m.group(1)), bytes.fromhex(m.group(2)))

    # -- point-to-point (radio) mode

    def pause_mac(self) -> int:
        """``mac pause``: returns how long (ms) the stack stays paused."""
        line = self._get("mac pause", re.compile(r"^\d+\Z"))
        return int(line)

    def resume_mac(self) -> None:
        self._set("mac resume")

    def radio_set_sf(self, sf: int) -> None:
        if not 7 <= sf <= 12:
            raise ValueError(f"spreading factor {sf} outside 7..12")
        self._set(f"radio set sf sf{sf}")

    def radio_set_wdt(self, ms: int) -> None:
        self._set(f"radio set wdt {ms}")

    def radio_tx(self, data: bytes, timeout: float | None = None) -> None:
        cmd = f"radio tx {data.hex().upper()}"
        first = self._cmd(cmd, {"ok", "invalid_param", "busy"})
        if first != "ok":
            raise ModemRejected(cmd, first)
        reply = self.link.wait({"radio_tx_ok", "radio_err"}, timeout or self.timeouts.tx_base, cmd)
        if reply != "radio_tx_ok":
            raise ModemError(f"{cmd!r}: {reply}")

    def radio_rx_start(self) -> None:
        """``radio rx 0``: continuous receive until a frame or the watchdog."""
        first = self._cmd("radio rx 0", {"ok", "invalid_param", "busy"})
        if first != "ok":
            raise ModemRejected("radio rx 0", first)

    def radio_rx_wait(self, timeout: float) -> bytes | None:
        """The next received frame (None on ``radio_err``); ModemTimeout after ``timeout``."""
        for line in list(self.link.unsolicited):
            m = RADIO_RX.match(line)
            if m:
                self.link.unsolicited.remove(line)
                return bytes.fromhex(m.group(1))
        reply = self.link.wait(lambda line: bool(RADIO_RX.match(line)) or line == "radio_err", timeout, "radio rx 0")
        m = RADIO_RX.match(reply)
        return bytes.fromhex(m.group(1)) if m else None
