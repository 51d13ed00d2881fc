"""Emulated Microchip RN2483 (EU868) / RN2903 (US915): every command of modems.md."""

from __future__ import annotations

import re

from collector.core import lorawan
from hil.emulator.core import EmulatorConfig, ModuleModel, Out, Replies

VERSIONS = {"EU868": "RN2483 1.0.5 Oct 31 2018 15:06:52", "US915": "RN2903 1.0.5 Nov 06 2018 10:45:27"}
DEFAULT_DR = {"EU868": 5, "US915": 0}
PAUSE_MS = "4294967245"

_HEX = re.compile(r"^(?:[0-9A-Fa-f]{2})*\Z")
_KEYS = {"deveui": 16, "appeui": 16, "appkey": 32, "devaddr": 8, "nwkskey": 32, "appskey": 32}


class RN2483Model(ModuleModel):
    REPLIES = Replies(ok="ok", busy="busy", no_free_ch="no_free_ch", too_long="invalid_data_len",
                      joined="accepted", denied="denied")
    DEFAULT_DR = DEFAULT_DR
    OTAA_KEYS = ("deveui", "appeui", "appkey")

    def __init__(self, config: EmulatorConfig, **kw):
        super().__init__(config, **kw)
        self.version = VERSIONS[self.region.name]
        self.hweui = config.dev_eui.upper()

    def _boot(self) -> None:
        """State after power-on / ``sys reset`` (keys are kept, as after ``mac save``)."""
        super()._boot()
        self.adr = False
        self.paused = False
        self.radio_sf = 12
        self.wdt_ms = 15000
        self.rx_waiting = False
        self.rx_token = 0

    # -- dispatch

    def _command(self, text: str, now: float) -> list[Out]:
        parts = text.split(" ")
        ok = [self.line(now, "ok")]
        bad = [self.line(now, "invalid_param")]
        stray = [self.line(now, "mac_tx_ok")] if self.faults.take("stray_tx_ok") else []
        head = " ".join(parts[:2])
        if text == "sys get ver":
            return stray + [self.line(now, self.version)]
        if text == "sys reset":
            return self._reboot(now)
        if text == "sys get hweui":
            return [self.line(now, self.hweui)]
        if head == "mac reset":
            band = parts[2] if len(parts) == 3 else None
            valid = ("868", "433") if self.region.name == "EU868" else (None, "915")
            if band not in valid or len(parts) > 3:
                return bad
            self._boot()
            return ok
        if head == "mac set" and len(parts) == 4:
            return stray + self._mac_set(parts[2], parts[3], now)
        if head == "mac get" and len(parts) == 3:
            return self._mac_get(parts[2], now)
        if head == "mac join" and len(parts) == 3:
            return self._join(parts[2], now)
        if head == "mac tx" and len(parts) == 5:
            return self._tx(parts[2], parts[3], parts[4], now)
        if text == "mac pause":
            self.paused = True
            return [self.line(now, PAUSE_MS)]
        if text == "mac resume":
            self.paused = False
            self.rx_waiting = False
            return ok
        if head == "radio set" and len(parts) == 4:
            return self._radio_set(parts[2], parts[3], now)
        if head == "radio tx" and len(parts) == 3:
            return self._radio_tx(parts[2], now)
        if text == "radio rx 0":
            return self._radio_rx(now)
        return bad

    def _mac_set(self, key: str, value: str, now: float) -> list[Out]:
        ok = [self.line(now, "ok")]
        bad = [self.line(now, "invalid_param")]
        if key in _KEYS:
            if len(value) != _KEYS[key] or not _HEX.match(value):
                return bad
            self.keys[key] = value.upper()
            return ok
        if key == "dr":
            try:
                self.region.dr(int(value))
            except ValueError:
                return bad
            self.dr = int(value)
            return ok
        if key == "adr" and value in ("on", "off"):
            self.adr = value == "on"
            return ok
        return bad

    def _mac_get(self, key: str, now: float) -> list[Out]:
        if key == "dr":
            return [self.line(now, str(self.dr))]
        if key in ("deveui", "appeui", "devaddr"):
            return [self.line(now, self.keys.get(key, "0" * _KEYS[key]))]
        if key == "adr":
            return [self.line(now, "on" if self.adr else "off")]
        if key == "upctr":
            return [self.line(now, str(self.fcnt))]
        return [self.line(now, "invalid_param")]

    # -- LoRaWAN

    def _join(self, mode: str, now: float) -> list[Out]:
        if mode not in ("otaa", "abp"):
            return [self.line(now, "invalid_param")]
        need = ("deveui", "appeui", "appkey") if mode == "otaa" else ("devaddr", "nwkskey", "appskey")
        if any(k not in self.keys for k in need):
            return [self.line(now, "keys_not_init")]
        if self.paused:
            return [self.line(now, "mac_paused")]
        if self.hung or self.busy_until > now:
            return [self.line(now, "busy")]
        if mode == "abp":
            self.joined, self.fcnt = True, 0
            return [self.line(now, "ok"), self.line(now, "accepted")]
        return self.start_join(now)

    def _tx(self, kind: str, port_s: str, hexdata: str, now: float) -> list[Out]:
        bad = [self.line(now, "invalid_param")]
        if kind not in ("cnf", "uncnf") or not port_s.isdigit() or not 1 <= int(port_s) <= 223:
            return bad
        if not hexdata or not _HEX.match(hexdata):
            return bad
        if self.paused:
            return [self.line(now, "mac_paused")]
        if self.hung or self.busy_until > now:
            return [self.line(now, "busy")]
        if not self.joined:
            return [self.line(now, "not_joined")]
        if self.faults.take("fcnt_err"):
            return [self.line(now, "frame_counter_err_rejoin_needed")]
        return self.start_tx(now, int(port_s), bytes.fromhex(hexdata), kind == "cnf", self.keys["deveui"])

    def _reboot(self, t: float) -> list[Out]:
        self._boot()
        return [self.line(t, self.version)]

    def _tx_result(self, t: float, dl: tuple[int, bytes] | None, confirmed: bool, nack: bool) -> list[Out]:
        if nack:
            return [self.line(t, "mac_err")]
        if dl:
            return [self.line(t, f"mac_rx {dl[0]} {dl[1].hex().upper()}")]
        return [self.line(t, "mac_tx_ok")]

    # -- radio (point to point)

    def _radio_set(self, key: str, value: str, now: float) -> list[Out]:
        if key == "sf" and re.fullmatch(r"sf(7|8|9|10|11|12)", value):
            self.radio_sf = int(value[2:])
            return [self.line(now, "ok")]
        if key == "wdt" and value.isdigit() and int(value) <= 4294967295:
            self.wdt_ms = int(value)
            return [self.line(now, "ok")]
        return [self.line(now, "invalid_param")]

    def _radio_tx(self, hexdata: str, now: float) -> list[Out]:
        if not hexdata or not _HEX.match(hexdata) or len(hexdata) > 510:
            return [self.line(now, "invalid_param")]
        if not self.paused or self.rx_waiting or self.busy_until > now:
            return [self.line(now, "busy")]
        payload = bytes.fromhex(hexdata)
        air = lorawan.time_on_air(self.radio_sf, 125_000, len(payload))
        end = now + self.delay(air)
        self.busy_until = end
        sf = self.radio_sf

        def done(t: float) -> list[Out]:
            if self.air is not None:
                self.air.broadcast(self, sf, payload)
            return [self.line(t, "radio_tx_ok")]

        return [self.line(now, "ok"), self.later(end, done)]

    def _radio_rx(self, now: float) -> list[Out]:
        if not self.paused or self.rx_waiting or self.busy_until > now:
            return [self.line(now, "busy")]
        self.rx_waiting = True
        self.rx_token += 1
        token = self.rx_token
        outs = [self.line(now, "ok")]
        if self.wdt_ms:
            def watchdog(t: float) -> list[Out]:
                if self.rx_waiting and self.rx_token == token:
                    self.rx_waiting = False
                    return [self.line(t, "radio_err")]
                return []

            outs.append(self.later(now + self.wdt_ms / 1000, watchdog))
        return outs

    def on_air(self, sf: int, payload: bytes, now: float) -> list[Out]:
        if not self.rx_waiting or sf != self.radio_sf:
            return []
        self.rx_waiting = False
        return [self.line(now, f"radio_rx  {payload.hex().upper()}")]
