"""Emulated Microchip RN2483 (EU868) / RN2903 (US915): every command of modems.md
and the others docs/modems.md lists, answered as the command reference says."""

from __future__ import annotations

import re

from collector.core import lorawan
from hil.emulator.core import EmulatorConfig, ModuleModel, Out, Replies

VERSIONS = {"EU868": "RN2483 1.0.5 Oct 31 2018 15:06:52", "US915": "RN2903 1.0.5 Nov 06 2018 10:45:27"}
DEFAULT_DR = {"EU868": 5, "US915": 0}
PAUSE_MS = "4294967245"
#: the band argument ``mac reset`` takes (None: none at all; the RN2903 has one band)
RESET_BANDS = {"EU868": ("868", "433"), "US915": (None, "915")}
#: second receive window after ``mac reset``: (DR, Hz)
DEFAULT_RX2 = {"EU868": (0, 869_525_000), "US915": (8, 923_300_000)}
RX2_LIMITS = {"EU868": (0, 7, 863_000_000, 870_000_000), "US915": (8, 13, 923_300_000, 927_500_000)}
#: radio settings after power-on: frequency, power (dBm)
RADIO_DEFAULTS = {"EU868": (868_100_000, 1), "US915": (923_300_000, 2)}
VDD_MV = "3304"
#: ``mac get status`` bits (firmware 1.0.5): mac state in bits 0-3, then these
STATUS_JOINED, STATUS_ADR, STATUS_PAUSED = 1 << 4, 1 << 6, 1 << 8

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
        self.dnctr = 0
        self.rx2 = DEFAULT_RX2[self.region.name]
        self.radio_freq, self.radio_pwr = RADIO_DEFAULTS[self.region.name]

    def _mac_reset(self) -> None:
        """``mac reset``: the LoRaWAN stack back to the band's defaults (DR, ADR,
        counters, channels, RX2; not joined). The keys stay, as stored by ``mac save``."""
        self._boot()
        self.plan.reset(self.config.sub_band)

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
            if band not in RESET_BANDS[self.region.name] or len(parts) > 3:
                return bad
            self._mac_reset()
            # after the reset: its epoch drops what was scheduled before it, not this
            return [self.line(now, "ok")]
        if text == "mac save":
            return ok
        if text == "sys get vdd":
            return [self.line(now, VDD_MV)]
        if text == "sys factoryRESET":
            # EEPROM erased: the keys are gone, the DevEUI is the hardware EUI again
            self.keys = {"deveui": self.hweui}
            self.plan.reset(None)
            return self._reboot(now)
        if head == "mac get" and len(parts) == 5 and parts[2] == "ch":
            return self._mac_get_ch(parts[3], parts[4], now)
        if head == "mac set" and len(parts) == 6 and parts[2] == "ch":
            return self._mac_set_ch(parts[3], parts[4], parts[5], now)
        if head == "mac set" and len(parts) == 5 and parts[2] == "rx2":
            return self._mac_set_rx2(parts[3], parts[4], now)
        if head == "radio get" and len(parts) == 3:
            return self._radio_get(parts[2], now)
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
        if key == "dnctr":
            return [self.line(now, str(self.dnctr))]
        if key == "status":
            state = 1 if self.busy_until > now else 0
            bits = state | (STATUS_JOINED if self.joined else 0) | (STATUS_ADR if self.adr else 0)
            bits |= STATUS_PAUSED if self.paused else 0
            return [self.line(now, f"{bits:08X}")]
        if key == "rx2":
            return [self.line(now, f"{self.rx2[0]} {self.rx2[1]}")]
        return [self.line(now, "invalid_param")]

    def _mac_get_ch(self, key: str, ch_s: str, now: float) -> list[Out]:
        plan = self.plan
        if not ch_s.isdigit() or not plan.valid(int(ch_s)):
            return [self.line(now, "invalid_param")]
        ch = int(ch_s)
        if key == "freq":
            return [self.line(now, str(plan.frequency(ch)))]
        if key == "drrange":
            lo, hi = plan.dr_range(ch)
            return [self.line(now, f"{lo} {hi}")]
        if key == "status":
            return [self.line(now, "on" if ch in plan.on else "off")]
        if key == "dcycle" and not plan.us:
            return [self.line(now, str(plan.dcycle(ch)))]
        return [self.line(now, "invalid_param")]

    def _mac_set_ch(self, key: str, ch_s: str, value: str, now: float) -> list[Out]:
        ok = key == "status" and ch_s.isdigit() and value in ("on", "off")
        ok = ok and self.plan.set_status(int(ch_s), value == "on")
        return [self.line(now, "ok" if ok else "invalid_param")]

    def _mac_set_rx2(self, dr_s: str, freq_s: str, now: float) -> list[Out]:
        lo, hi, fmin, fmax = RX2_LIMITS[self.region.name]
        if dr_s.isdigit() and freq_s.isdigit() and lo <= int(dr_s) <= hi and fmin <= int(freq_s) <= fmax:
            self.rx2 = (int(dr_s), int(freq_s))
            return [self.line(now, "ok")]
        return [self.line(now, "invalid_param")]

    def _radio_get(self, key: str, now: float) -> list[Out]:
        value = {"sf": f"sf{self.radio_sf}", "freq": str(self.radio_freq), "pwr": str(self.radio_pwr),
                 "cr": "4/5", "bw": "125", "wdt": str(self.wdt_ms)}.get(key)
        return [self.line(now, value if value is not None else "invalid_param")]

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
            self.dnctr += 1
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
