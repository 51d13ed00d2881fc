"""Emulated RAKwireless RAK3172 with RUI3 firmware: the AT commands of modems.md,
plus the queries (``AT+<name>=?``), ``AT``, ``ATZ`` and ``AT+NJS=?`` a driver needs."""

from __future__ import annotations

import re

from collector import lorawan
from hil.emulator.core import EmulatorConfig, ModuleModel, Out, TxFrame

FIRMWARE = "RUI_4.0.6_RAK3172-E"
#: what RUI3 prints when it boots
BANNER = ("RAKwireless RAK3172-E Example", "------------------------------------------------------",
          "Current Work Mode: LoRaWAN.")
BANDS = {4: "EU868", 5: "US915"}
DEFAULT_DR = {"EU868": 0, "US915": 0}
JOIN_ACCEPT_DELAY = 5.0
RX1_DELAY = 1.0
RX2_DELAY = 2.0
JOIN_REQUEST_PHY = 23

_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})+$")
_KEYS = {"DEVEUI": 16, "APPEUI": 16, "APPKEY": 32, "DEVADDR": 8, "APPSKEY": 32, "NWKSKEY": 32}


class RAK3172Model(ModuleModel):
    def __init__(self, config: EmulatorConfig, **kw):
        super().__init__(config, **kw)
        self.keys: dict[str, str] = {"DEVEUI": config.dev_eui.upper()}
        if config.provisioned:
            self.keys.update(APPEUI=config.app_eui.upper(), APPKEY=config.app_key.upper())
        self.band = {v: k for k, v in BANDS.items()}[self.region.name]
        self.njm = 1
        self.adr = 0
        self.cfm = 0
        self._boot()
        if config.dr is not None:
            self.dr = config.dr

    def _boot(self) -> None:
        self.epoch += 1
        self.dr = DEFAULT_DR[self.region.name]
        self.joined = False
        self.hung = False
        self.busy_until = 0.0
        self.fcnt = 0

    def _banner(self, t: float) -> list[Out]:
        return [self.line(t, text) for text in BANNER]

    def _command(self, text: str, now: float) -> list[Out]:
        ok = [self.line(now, "OK")]
        err = [self.line(now, "AT_PARAM_ERROR")]
        if text == "AT":
            return ok
        if text == "ATZ":
            self._boot()
            return self._banner(now)
        m = re.fullmatch(r"AT\+([A-Z]+)=(.*)", text)
        if not m:
            return [self.line(now, "AT_ERROR")]
        name, value = m.groups()
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
        if name == "BAND":
            if not value.isdigit() or int(value) not in BANDS:
                return err
            self.band = int(value)
            self.region = lorawan.region(BANDS[self.band])
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
        freq = self.pick_channel(now)
        if freq is None:
            return [self.line(now, "AT_DUTYCYCLE_RESTRICTED")]
        d = self.region.dr(self.dr)
        air = lorawan.time_on_air(d.sf, d.bw_hz, JOIN_REQUEST_PHY)
        end = now + self.delay(air)
        self.close_band(freq, air, end)
        done = end + self.delay(JOIN_ACCEPT_DELAY)
        self.busy_until = done
        deny = self.faults.take("deny_join")

        def finish(t: float) -> list[Out]:
            if deny:
                return [self.line(t, "+EVT:JOIN_FAILED_RX_TIMEOUT")]
            self.joined, self.fcnt = True, 0
            return [self.line(t, "+EVT:JOINED")]

        return [self.line(now, "OK"), self.later(done, finish)]

    def _send(self, value: str, now: float) -> list[Out]:
        err = [self.line(now, "AT_PARAM_ERROR")]
        m = re.fullmatch(r"(\d{1,3}):([0-9A-Fa-f]*)", value)
        if not m or not 1 <= int(m.group(1)) <= 223 or not _HEX.match(m.group(2)):
            return err
        if self.hung or self.busy_until > now:
            return [self.line(now, "AT_BUSY_ERROR")]
        if not (self.joined or self._abp_ready()):
            return [self.line(now, "AT_NO_NETWORK_JOINED")]
        if self.faults.take("busy"):
            return [self.line(now, "AT_BUSY_ERROR")]
        if self.faults.take("no_free_ch"):
            return [self.line(now, "AT_DUTYCYCLE_RESTRICTED")]
        payload = bytes.fromhex(m.group(2))
        d = self.region.dr(self.dr)
        if len(payload) > d.max_payload:
            return err
        freq = self.pick_channel(now)
        if freq is None:
            return [self.line(now, "AT_DUTYCYCLE_RESTRICTED")]
        if self.faults.take("drop_second_reply"):
            self.hung = True
            return [self.line(now, "OK")]
        air = d.time_on_air(len(payload))
        end = now + self.delay(air)
        if self.faults.take("reboot"):
            def reboot(t: float) -> list[Out]:
                self._boot()
                return self._banner(t)

            return [self.line(now, "OK"), self.later(now + self.delay(air / 2), reboot)]
        self.close_band(freq, air, end)
        dl = self.take_downlink()
        done = end + self.delay(RX1_DELAY if dl else RX2_DELAY)
        self.busy_until = done
        lower = self.faults.take("lower_dr")
        port, fcnt, dr, confirmed = int(m.group(1)), self.fcnt, self.dr, bool(self.cfm)
        nack = confirmed and self.faults.take("nack")
        self.fcnt += 1

        def transmit(t: float) -> list[Out]:
            self.emit_tx(TxFrame(
                dev_eui=self.keys["DEVEUI"], fport=port, fcnt=fcnt, payload=payload, dr=dr,
                region=self.region.name, frequency_hz=freq, time_ns=self.wall_ns(), airtime_s=air,
                confirmed=confirmed,
            ))
            return []

        def finish(t: float) -> list[Out]:
            if lower and self.dr > 0:
                self.dr -= 1
            outs = []
            if dl:
                rssi, snr = int(self.config.rssi), int(self.config.snr)
                outs.append(self.line(t, f"+EVT:RX_1:{rssi}:{snr}:UNICAST:{dl[0]}:{dl[1].hex().upper()}"))
            if nack:
                outs.append(self.line(t, "+EVT:SEND_CONFIRMED_FAILED(8)"))
            else:
                outs.append(self.line(t, "+EVT:SEND_CONFIRMED_OK" if confirmed else "+EVT:TX_DONE"))
            return outs

        return [self.line(now, "OK"), self.later(end, transmit), self.later(done, finish)]
