"""Emulated RAKwireless RAK3172 with RUI3 firmware: the AT commands of modems.md and
the others docs/modems.md lists, in RUI3's four forms: ``AT+X?`` (help), ``AT+X``
(run), ``AT+X=?`` (read), ``AT+X=<value>`` (write)."""

from __future__ import annotations

import re

from collector.core import lorawan
from hil.emulator.channels import ChannelPlan
from hil.emulator.core import EmulatorConfig, ModuleModel, Out, Replies

FIRMWARE = "RUI_4.0.6_RAK3172-E"
#: what RUI3 prints when it boots
BANNER = ("RAKwireless RAK3172-E Example", "------------------------------------------------------",
          f"Version: {FIRMWARE}", "Current Work Mode: LoRaWAN.")
#: ``AT+JOIN`` without parameters: start, no auto-join, 8 s between attempts, 0 retries
JOIN_DEFAULTS = "1:0:8:0"
#: ``AT+<name>?``: the one-line help of each command the emulator knows
HELP = {
    "ADR": "get or set the adaptive data rate setting (0 = off, 1 = on)",
    "APPEUI": "get or set the application EUI (8 bytes in hex)",
    "APPKEY": "get or set the application key (16 bytes in hex)",
    "APPSKEY": "get or set the application session key (16 bytes in hex)",
    "BAND": "get or set the active region (4 = EU868, 5 = US915)",
    "CFM": "get or set the confirm mode of uplinks (0 = off, 1 = on)",
    "CFS": "get the confirm status of the last uplink (0 = not acknowledged, 1 = acknowledged)",
    "CLASS": "get or set the device class (A, B or C)",
    "DCS": "get or set the duty cycle setting (0 = off, 1 = on)",
    "DEVADDR": "get or set the device address (4 bytes in hex)",
    "DEVEUI": "get or set the device EUI (8 bytes in hex)",
    "DR": "get or set the data rate",
    "JOIN": "join the network (start:auto-join:interval:attempts)",
    "MASK": "get or set the channel mask, one bit per sub-band (US915 only)",
    "NJM": "get or set the network join mode (0 = ABP, 1 = OTAA)",
    "NJS": "get the join status (0 = not joined, 1 = joined)",
    "NWKSKEY": "get or set the network session key (16 bytes in hex)",
    "NWM": "get or set the network working mode (0 = P2P, 1 = LoRaWAN, 2 = FSK)",
    "RECV": "get the last received data (port:hex)",
    "SEND": "send data on a port (port:hex)",
    "SN": "get the serial number of the device",
    "VER": "get the version of the firmware",
}
BANDS = {4: "EU868", 5: "US915"}
DEFAULT_DR = {"EU868": 0, "US915": 0}

_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+\Z")
_KEYS = {"DEVEUI": 16, "APPEUI": 16, "APPKEY": 32, "DEVADDR": 8, "APPSKEY": 32, "NWKSKEY": 32}


class RAK3172Model(ModuleModel):
    REPLIES = Replies(ok="OK", busy="AT_BUSY_ERROR", no_free_ch="AT_DUTYCYCLE_RESTRICTED",
                      too_long="AT_PARAM_ERROR", joined="+EVT:JOINED", denied="+EVT:JOIN_FAILED_RX_TIMEOUT")

    DEFAULT_DR = DEFAULT_DR
    OTAA_KEYS = ("DEVEUI", "APPEUI", "APPKEY")

    def __init__(self, config: EmulatorConfig, **kw):
        super().__init__(config, **kw)
        self.band = {v: k for k, v in BANDS.items()}[self.region.name]
        self.njm = 1
        self.adr = 0
        self.cfm = 0
        self.dev_class = "A"
        self.echo = False
        #: the last downlink received, and whether the last confirmed uplink was acknowledged
        self.recv: tuple[int, bytes] = (0, b"")
        self.cfs = 0
        self.serial = "1722" + config.dev_eui[-8:].upper()

    def _banner(self, t: float) -> list[Out]:
        return [self.line(t, text) for text in BANNER]

    def _command(self, text: str, now: float) -> list[Out]:
        echo = [self.line(now, text)] if self.echo else []
        return echo + self._answer(text, now)

    def _answer(self, text: str, now: float) -> list[Out]:
        ok = [self.line(now, "OK")]
        err = [self.line(now, "AT_PARAM_ERROR")]
        if text == "AT":
            return ok
        if text == "ATZ":
            return self._reboot(now)
        if text == "ATE":
            self.echo = not self.echo
            return ok
        if text == "AT?":
            return [self.line(now, f"AT+{name}: {desc}") for name, desc in HELP.items()] + ok
        if text == "AT+JOIN":
            return self._join(JOIN_DEFAULTS, now)
        m = re.fullmatch(r"AT\+([A-Z]+)(\?|=.*)", text)
        if not m or m.group(1) not in HELP:
            return [self.line(now, "AT_COMMAND_NOT_FOUND" if text.startswith("AT") else "AT_ERROR")]
        name, value = m.group(1), m.group(2)[1:]
        if m.group(2) == "?":
            return [self.line(now, f"AT+{name}: {HELP[name]}"), self.line(now, "OK")]
        if value == "?":
            got = self._query(name)
            if got is None:
                return [self.line(now, "AT_ERROR")]
            return [self.line(now, f"AT+{name}={got}"), self.line(now, "OK")]
        if name in _KEYS:
            if len(value) != _KEYS[name] or not _HEX.match(value):
                return err
            self.keys[name] = value.upper()
            return ok
        if name in ("NJM", "ADR", "CFM"):
            if value not in ("0", "1"):
                return err
            setattr(self, name.lower(), int(value))
            if name == "NJM":
                self.joined = False
            return ok
        if name == "DCS":
            if value not in ("0", "1"):
                return err
            self.config.duty_cycle = value == "1"
            return ok
        if name == "CLASS":
            if value not in ("A", "B", "C"):
                return err
            self.dev_class = value
            return ok
        if name == "NWM":
            # only LoRaWAN is emulated; P2P and FSK modes are refused
            return ok if value == "1" else err
        if name == "MASK":
            if self.region.name != "US915":
                return [self.line(now, "AT_ERROR")]
            if not re.fullmatch(r"[0-9A-Fa-f]{4}", value) or not 0 < int(value, 16) < 256:
                return err
            self.plan.set_mask(int(value, 16))
            return ok
        if name == "BAND":
            if not value.isdigit() or int(value) not in BANDS:
                return err
            self.band = int(value)
            self.region = lorawan.region(BANDS[self.band])
            self.plan = ChannelPlan(self.region, self.config.sub_band)
            self.band_free_at.clear()
            self._boot_keep_epoch()
            return ok
        if name == "DR":
            try:
                self.region.dr(int(value))
            except ValueError:
                return err
            self.dr = int(value)
            return ok
        if name == "JOIN":
            return self._join(value, now)
        if name == "SEND":
            return self._send(value, now)
        return [self.line(now, "AT_ERROR")]

    def _boot_keep_epoch(self) -> None:
        self.dr = DEFAULT_DR[self.region.name]
        self.joined = False

    def _query(self, name: str) -> str | None:
        if name in _KEYS:
            return self.keys.get(name, "0" * _KEYS[name])
        return {
            "VER": FIRMWARE,
            "BAND": str(self.band),
            "DR": str(self.dr),
            "NJM": str(self.njm),
            "NJS": "1" if self.joined else "0",
            "ADR": str(self.adr),
            "CFM": str(self.cfm),
            "CFS": str(self.cfs),
            "CLASS": self.dev_class,
            "DCS": "1" if self.config.duty_cycle else "0",
            "NWM": "1",
            "SN": self.serial,
            "RECV": f"{self.recv[0]}:{self.recv[1].hex().upper()}",
            "MASK": f"{self.plan.mask():04X}" if self.region.name == "US915" else None,
        }.get(name)

    def _abp_ready(self) -> bool:
        return self.njm == 0 and all(k in self.keys for k in ("DEVADDR", "APPSKEY", "NWKSKEY"))

    def _join(self, value: str, now: float) -> list[Out]:
        m = re.fullmatch(r"([01])(?::([01]))?(?::(\d+))?(?::(\d+))?", value)
        if not m:
            return [self.line(now, "AT_PARAM_ERROR")]
        if m.group(1) == "0":
            return [self.line(now, "OK")]
        if self.njm != 1 or any(k not in self.keys for k in ("DEVEUI", "APPEUI", "APPKEY")):
            return [self.line(now, "AT_PARAM_ERROR")]
        if self.hung or self.busy_until > now:
            return [self.line(now, "AT_BUSY_ERROR")]
        return self.start_join(now)

    def _send(self, value: str, now: float) -> list[Out]:
        err = [self.line(now, "AT_PARAM_ERROR")]
        m = re.fullmatch(r"(\d{1,3}):([0-9A-Fa-f]*)", value)
        if not m or not 1 <= int(m.group(1)) <= 223 or not _HEX.match(m.group(2)):
            return err
        if self.hung or self.busy_until > now:
            return [self.line(now, "AT_BUSY_ERROR")]
        if not (self.joined or self._abp_ready()):
            return [self.line(now, "AT_NO_NETWORK_JOINED")]
        return self.start_tx(now, int(m.group(1)), bytes.fromhex(m.group(2)), bool(self.cfm), self.keys["DEVEUI"])

    def _reboot(self, t: float) -> list[Out]:
        self._boot()
        return self._banner(t)

    def _tx_result(self, t: float, dl: tuple[int, bytes] | None, confirmed: bool, nack: bool) -> list[Out]:
        outs = []
        if confirmed:
            self.cfs = 0 if nack else 1
        if dl:
            self.recv = dl
            rssi, snr = int(self.config.rssi), int(self.config.snr)
            outs.append(self.line(t, f"+EVT:RX_1:{rssi}:{snr}:UNICAST:{dl[0]}:{dl[1].hex().upper()}"))
        if nack:
            outs.append(self.line(t, "+EVT:SEND_CONFIRMED_FAILED(8)"))
        else:
            outs.append(self.line(t, "+EVT:SEND_CONFIRMED_OK" if confirmed else "+EVT:TX_DONE"))
        return outs
