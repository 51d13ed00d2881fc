"""The emulator models without a terminal: replies, timing, N, duty cycle."""

from __future__ import annotations

import pytest

from collector.core import lorawan
from hil.emulator import EmulatorConfig, Faults, RAK3172Model, RN2483Model


def lines(outs):
    return [o.data.decode().rstrip("\r\n") for o in outs if o.data]


def run(model, text, now):
    """Handle ``text`` and run its scheduled actions in time order; (time, line) pairs."""
    pending = sorted(model.handle(text, now), key=lambda o: o.at)
    out = []
    while pending:
        o = pending.pop(0)
        if o.epoch != model.epoch:
            continue
        if o.data:
            out.append((o.at, o.data.decode().rstrip("\r\n")))
        if o.action:
            pending = sorted(pending + o.action(o.at), key=lambda x: x.at)
    return out


@pytest.mark.parametrize(
    ("cmd", "reply"),
    [
        ("sys get ver", "RN2483 1.0.5 Oct 31 2018 15:06:52"),
        ("sys get hweui", "0004A30B001C0530"),
        ("mac reset 868", "ok"),
        ("mac reset 915", "invalid_param"),
        ("mac set deveui 0011223344556677", "ok"),
        ("mac set deveui 00112233", "invalid_param"),
        ("mac set appkey " + "00" * 16, "ok"),
        ("mac set dr 7", "invalid_param"),
        ("mac set dr 3", "ok"),
        ("mac set adr on", "ok"),
        ("mac get dr", "5"),
        ("mac pause", "4294967245"),
        ("mac resume", "ok"),
        ("radio set sf sf9", "ok"),
        ("radio set sf sf13", "invalid_param"),
        ("radio set wdt 0", "ok"),
        ("mac tx uncnf 16 0102", "not_joined"),
        ("mac tx uncnf 0 0102", "invalid_param"),
        ("mac tx uncnf 16 01F", "invalid_param"),
        ("radio rx 0", "busy"),
        ("bogus", "invalid_param"),
    ],
)
def test_rn2483_replies(cmd, reply):
    m = RN2483Model(EmulatorConfig(region="EU868"))
    assert lines(m.handle(cmd, 0.0)) == [reply]


def test_rn2903_answers_for_us915():
    m = RN2483Model(EmulatorConfig(region="US915"))
    assert lines(m.handle("sys get ver", 0.0))[0].startswith("RN2903 ")
    assert lines(m.handle("mac reset 868", 0.0)) == ["invalid_param"]
    assert lines(m.handle("mac set dr 4", 0.0)) == ["ok"]


def test_rn2483_tx_timing_is_airtime_times_speed():
    m = RN2483Model(EmulatorConfig(region="US915", speed=0.5))
    assert run(m, "mac join otaa", 10.0)[-1][1] == "accepted"
    m.dr = 0
    got = run(m, "mac tx uncnf 16 " + "00" * 11, 100.0)
    air = lorawan.region("US915").dr(0).time_on_air(11)
    assert got[0] == (100.0, "ok")
    assert got[1] == (pytest.approx(100.0 + 0.5 * (air + 2.0)), "mac_tx_ok")
    assert m.tx_log[0].airtime_s == pytest.approx(0.370688)
    # busy until the second reply
    assert lines(m.handle("mac tx uncnf 16 00", 100.1)) == ["busy"]


def test_rn2483_enforces_n_per_dr():
    m = RN2483Model(EmulatorConfig(region="US915", speed=0))
    run(m, "mac join otaa", 0.0)
    m.dr = 1
    assert run(m, "mac tx uncnf 16 " + "00" * 54, 1.0) == [(1.0, "invalid_data_len")]
    assert run(m, "mac tx uncnf 16 " + "00" * 53, 1.0)[-1][1] == "mac_tx_ok"


def test_rn2483_duty_cycle_closes_the_band():
    m = RN2483Model(EmulatorConfig(region="EU868", speed=1.0))
    t = run(m, "mac join otaa", 0.0)[-1][0]
    # the join request itself closed the band for 99 x its airtime
    assert lines(m.handle("mac tx uncnf 16 00", t)) == ["no_free_ch"]
    t = max(m.band_free_at.values())
    m.dr = 0
    got = run(m, "mac tx uncnf 16 " + "00" * 10, t)
    end_air = t + lorawan.region("EU868").dr(0).time_on_air(10)
    assert got[-1][1] == "mac_tx_ok"
    # all three default channels share the 1 % band: closed for 99 x airtime
    assert lines(m.handle("mac tx uncnf 16 00", got[-1][0] + 1)) == ["no_free_ch"]
    assert m.band_free_at[(868_000_001, 868_600_000)] == pytest.approx(
        end_air + lorawan.off_time(lorawan.region("EU868").dr(0).time_on_air(10), 0.01))


def test_duty_cycle_off_switch_and_scale():
    m = RN2483Model(EmulatorConfig(region="EU868", speed=0, duty_cycle=False))
    run(m, "mac join otaa", 0.0)
    for _ in range(3):
        assert run(m, "mac tx uncnf 16 00", 0.0)[-1][1] == "mac_tx_ok"


@pytest.mark.parametrize(
    ("cmd", "reply"),
    [
        ("AT", ["OK"]),
        ("AT+DR=?", ["AT+DR=0", "OK"]),
        ("AT+DR=3", ["OK"]),
        ("AT+DR=7", ["AT_PARAM_ERROR"]),
        ("AT+BAND=?", ["AT+BAND=4"]),
        ("AT+BAND=9", ["AT_PARAM_ERROR"]),
        ("AT+NJM=1", ["OK"]),
        ("AT+ADR=2", ["AT_PARAM_ERROR"]),
        ("AT+CFM=1", ["OK"]),
        ("AT+DEVEUI=0011223344556677", ["OK"]),
        ("AT+APPKEY=00", ["AT_PARAM_ERROR"]),
        ("AT+SEND=16:0102", ["AT_NO_NETWORK_JOINED"]),
        ("AT+SEND=0:0102", ["AT_PARAM_ERROR"]),
        ("AT+JOIN=1:0:10:8", ["OK"]),
        ("AT+NOPE=1", ["AT_COMMAND_NOT_FOUND"]),
        ("hello", ["AT_ERROR"]),
    ],
)
def test_rak3172_replies(cmd, reply):
    m = RAK3172Model(EmulatorConfig(region="EU868"))
    assert lines(m.handle(cmd, 0.0))[: len(reply)] == reply


def test_rak3172_join_send_events_and_n():
    m = RAK3172Model(EmulatorConfig(region="US915", speed=0))
    assert run(m, "AT+JOIN=1:0:10:8", 0.0)[-1][1] == "+EVT:JOINED"
    assert run(m, "AT+SEND=16:" + "00" * 12, 1.0) == [(1.0, "AT_PARAM_ERROR")]
    m.queue_downlink(2, b"\x0a")
    assert [x[1] for x in run(m, "AT+SEND=16:" + "00" * 11, 1.0)] == [
        "OK", "+EVT:RX_1:-60:9:UNICAST:2:0A", "+EVT:TX_DONE"]
    assert run(m, "AT+BAND=4", 2.0) == [(2.0, "OK")]
    assert run(m, "AT+SEND=16:00", 2.0) == [(2.0, "AT_NO_NETWORK_JOINED")]


def test_denied_join_and_faults_are_one_shot():
    faults = Faults()
    faults.inject("deny_join")
    m = RN2483Model(EmulatorConfig(region="US915", speed=0), faults=faults)
    assert [x[1] for x in run(m, "mac join otaa", 0.0)] == ["ok", "denied"]
    assert [x[1] for x in run(m, "mac join otaa", 0.0)] == ["ok", "accepted"]
    with pytest.raises(ValueError, match="unknown fault"):
        faults.inject("lightning")
