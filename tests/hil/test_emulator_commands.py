"""Every command the emulators answer beyond the driver's needs, over a real
pseudo-terminal, as the Microchip command reference and the RUI3 AT manual say.

Each command is followed by a marker command (``sys get hweui`` / ``AT+SN=?``) whose
reply closes the answer, so a command that answers nothing (or answers late, or
whose answer is dropped by a reset) fails here instead of hanging. Every command
tested is listed in docs/modems.md.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from hil.drivers.link import SerialLink, open_port
from hil.emulator import EmulatorConfig, start_emulator

pytestmark = pytest.mark.timeout(30)

DOC = Path(__file__).resolve().parents[2] / "docs" / "modems.md"
EUI = "0004A30B001C0530"
MARK = {"rn2483": ("sys get hweui", EUI), "rak3172": ("AT+ADR=?", "AT+ADR=0")}

RN2483 = [
    ("mac reset 868", ["ok"]),
    ("mac reset 433", ["ok"]),
    ("mac reset", ["invalid_param"]),
    ("mac reset 915", ["invalid_param"]),
    ("mac save", ["ok"]),
    ("sys get vdd", ["3304"]),
    ("mac get status", ["00000000"]),
    ("mac set rx2 3 869525000", ["ok"]),
    ("mac set rx2 3 915000000", ["invalid_param"]),
    ("mac get rx2", ["0 869525000"]),
    ("radio get sf", ["sf12"]),
    ("radio get freq", ["868100000"]),
    ("radio get pwr", ["1"]),
    ("radio get cr", ["4/5"]),
    ("radio get bw", ["125"]),
    ("radio get wdt", ["15000"]),
    ("radio get nope", ["invalid_param"]),
    ("mac get ch freq 1", ["868300000"]),
    ("mac get ch dcycle 0", ["302"]),
    ("mac get ch drrange 2", ["0 5"]),
    ("mac get ch status 2", ["on"]),
    ("mac get ch status 16", ["invalid_param"]),
    ("mac set ch status 1 off", ["ok"]),
    ("mac set ch status 9 on", ["invalid_param"]),
    ("mac get dnctr", ["0"]),
    ("mac get upctr", ["0"]),
    ("sys factoryRESET", ["RN2483 1.0.5 Oct 31 2018 15:06:52"]),
]
RN2903 = [
    ("mac reset", ["ok"]),
    ("mac reset 915", ["ok"]),
    ("mac reset 868", ["invalid_param"]),
    ("mac save", ["ok"]),
    ("mac set rx2 8 923300000", ["ok"]),
    ("mac set rx2 3 869525000", ["invalid_param"]),
    ("mac get rx2", ["8 923300000"]),
    ("radio get freq", ["923300000"]),
    ("radio get pwr", ["2"]),
    ("mac get ch freq 8", ["903900000"]),
    ("mac get ch freq 65", ["904600000"]),
    ("mac get ch drrange 64", ["4 4"]),
    ("mac get ch status 8", ["on"]),
    ("mac get ch status 0", ["off"]),
    ("mac get ch dcycle 0", ["invalid_param"]),
    ("mac set ch status 0 on", ["ok"]),
    ("mac set ch status 72 on", ["invalid_param"]),
    ("mac set ch status 8 maybe", ["invalid_param"]),
    ("sys factoryRESET", ["RN2903 1.0.5 Nov 06 2018 10:45:27"]),
]
RAK3172 = [
    ("AT+JOIN", ["OK"]),
    ("AT?", [f"AT+{n}: {d}" for n, d in __import__("hil.emulator.rak3172", fromlist=["HELP"]).HELP.items()] + ["OK"]),
    ("AT+VER?", ["AT+VER: get the version of the firmware", "OK"]),
    ("AT+VER=?", ["AT+VER=RUI_4.0.6_RAK3172-E", "OK"]),
    ("AT+DCS=?", ["AT+DCS=1", "OK"]),
    ("AT+DCS=0", ["OK"]),
    ("AT+CFS=?", ["AT+CFS=0", "OK"]),
    ("AT+RECV=?", ["AT+RECV=0:", "OK"]),
    ("AT+CLASS=?", ["AT+CLASS=A", "OK"]),
    ("AT+CLASS=D", ["AT_PARAM_ERROR"]),
    ("AT+NWM=?", ["AT+NWM=1", "OK"]),
    ("AT+NWM=0", ["AT_PARAM_ERROR"]),
    ("AT+SN=?", ["AT+SN=1722001C0530", "OK"]),
    ("AT+MASK=?", ["AT_ERROR"]),
    ("AT+NOPE=?", ["AT_COMMAND_NOT_FOUND"]),
    ("ATZ", ["RAKwireless RAK3172-E Example", "------------------------------------------------------",
             "Version: RUI_4.0.6_RAK3172-E", "Current Work Mode: LoRaWAN."]),
]
RAK3172_US = [
    ("AT+MASK=?", ["AT+MASK=0002", "OK"]),
    ("AT+MASK=0001", ["OK"]),
    ("AT+MASK=0000", ["AT_PARAM_ERROR"]),
]
CASES = ([("rn2483", "EU868", c, r) for c, r in RN2483] + [("rn2483", "US915", c, r) for c, r in RN2903]
         + [("rak3172", "EU868", c, r) for c, r in RAK3172] + [("rak3172", "US915", c, r) for c, r in RAK3172_US])


def is_async(line: str) -> bool:
    """Lines a module prints when radio work ends, whenever that is."""
    return line.startswith("+EVT:") or line in ("accepted", "denied", "mac_tx_ok", "mac_err")


def answer(link: SerialLink, module: str, command: str) -> list[str]:
    """The lines ``command`` is answered with at once, up to the marker's reply;
    asynchronous lines go to ``link.unsolicited`` (see :func:`event`)."""
    mark, mark_reply = MARK[module]
    link.flush()
    link.write_line(command)
    link.write_line(mark)
    lines = []
    while (line := link.read_line(link.clock() + 5)) != mark_reply:
        assert line is not None, f"{command!r}: no marker reply after {lines}"
        if is_async(line):
            link.unsolicited.append(line)
        elif line != mark:  # the marker's echo when ATE turned echo on
            lines.append(line)
    assert link.read_line(link.clock() + 5) == "OK" if module == "rak3172" else True
    return lines


@pytest.fixture
def links():
    made = {}

    def get(module: str, region: str) -> SerialLink:
        # a fresh module per command, so no answer depends on the one before
        emu = start_emulator(module, EmulatorConfig(region=region, speed=0, dev_eui=EUI))
        link = SerialLink(open_port(emu.path, 115200), name=emu.path)
        made.setdefault("all", []).append((emu, link))
        return link

    yield get
    for emu, link in made.get("all", []):
        link.close()
        emu.stop()


@pytest.mark.parametrize(("module", "region", "command", "reply"), CASES, ids=[f"{m}-{r}-{c}" for m, r, c, _ in CASES])
def test_command_answers_as_the_reference_says(links, module, region, command, reply):
    assert answer(links(module, region), module, command) == reply


def fixed_part(command: str) -> str:
    """What docs/modems.md spells out of ``command``: its words before the first
    argument (``mac get ch freq <n>``), or an AT command up to its ``=``/``?``."""
    if command.startswith("AT"):
        return command if command.endswith("?") or "=" not in command else command.split("=")[0] + "="
    words = []
    for w in command.split(" "):
        if w.isdigit() or w in ("on", "off", "maybe"):
            break
        words.append(w)
    return " ".join(words)


@pytest.mark.parametrize("command", sorted({fixed_part(c) for _m, _r, c, _ in CASES if c not in ("radio get nope",)
                                            and "NOPE" not in c}))
def test_every_tested_command_is_in_docs_modems(command):
    assert f"`{command}" in DOC.read_text(), f"{command!r} is not described in docs/modems.md"


def test_mac_reset_answer_is_not_lost_and_resets_the_stack(links):
    link = links("rn2483", "EU868")
    assert answer(link, "rn2483", "mac set dr 2") == ["ok"]
    assert answer(link, "rn2483", "mac reset 868") == ["ok"]
    assert answer(link, "rn2483", "mac get dr") == ["5"]


def test_factory_reset_forgets_the_keys(links):
    link = links("rn2483", "EU868")
    join(link)
    answer(link, "rn2483", "sys factoryRESET")
    assert answer(link, "rn2483", "mac get appeui") == ["0000000000000000"]
    assert answer(link, "rn2483", "mac join otaa") == ["keys_not_init"]


def test_rn2903_channel_mask_decides_where_uplinks_go(links):
    """Sub-band 2 is on at start; switch to sub-band 1 and every uplink moves there."""
    link = links("rn2483", "US915")
    for ch in range(72):
        on = ch < 8 or ch == 64
        assert answer(link, "rn2483", f"mac set ch status {ch} {'on' if on else 'off'}") == ["ok"]
    join(link)
    assert answer(link, "rn2483", "mac get status") == ["00000010"]
    for _ in range(8):
        assert answer(link, "rn2483", "mac tx uncnf 16 00") == ["ok"]
        event(link, "mac_tx_ok")


def event(link: SerialLink, line: str) -> None:
    """Wait for the asynchronous ``line`` (maybe already read by :func:`answer`)."""
    if line in link.unsolicited:
        link.unsolicited.remove(line)
    else:
        link.wait({line}, 5, line)


def test_rak3172_bare_join_joins(links):
    link = links("rak3172", "US915")
    assert answer(link, "rak3172", "AT+JOIN") == ["OK"]
    event(link, "+EVT:JOINED")
    assert answer(link, "rak3172", "AT+NJS=?") == ["AT+NJS=1", "OK"]


def join(link: SerialLink) -> None:
    assert answer(link, "rn2483", "mac join otaa") == ["ok"]
    event(link, "accepted")


def test_rak3172_echo_toggles(links):
    link = links("rak3172", "EU868")
    assert answer(link, "rak3172", "ATE") == ["OK"]
    assert answer(link, "rak3172", "AT+DR=?") == ["AT+DR=?", "AT+DR=0", "OK"]
    assert answer(link, "rak3172", "ATE") == ["ATE", "OK"]
    assert answer(link, "rak3172", "AT+DR=?") == ["AT+DR=0", "OK"]
