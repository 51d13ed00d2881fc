"""Drivers against the emulators over real pseudo-terminals: the normal path."""

from __future__ import annotations

import pytest

from collector.core import wire
from hil import bench
from hil.drivers.modem import PayloadTooLong

MODULES = ["rn2483", "rak3172"]


def sent_record(rig, msg_id: int) -> bytes:
    """The record the emulator put on the air as message ``msg_id``."""
    frames = [f.payload for f in rig.model.tx_log if f.payload[0] == msg_id]
    return wire.defragment(frames)[1]


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("region", ["EU868", "US915"])
def test_probe(rig_factory, module, region):
    rig = rig_factory(module, region, dev_eui="70B3D57ED005A1B2", dr=2)
    info = rig.modem.probe()
    assert info.region == region
    assert info.dev_eui == "70B3D57ED005A1B2"
    assert info.dr == 2
    assert info.max_payload == (51 if region == "EU868" else 125)
    if module == "rn2483":
        assert info.model == ("RN2483" if region == "EU868" else "RN2903")
        assert info.firmware == "1.0.5"
    else:
        assert info.model == "RAK3172" and info.joined is False


@pytest.mark.parametrize("module", MODULES)
def test_join_dr_and_max_payload(rig_factory, module):
    rig = rig_factory(module, "US915")
    m = rig.modem
    m.probe()
    m.join()
    for dr, n in [(0, 11), (1, 53), (2, 125), (3, 242), (4, 242)]:
        m.set_dr(dr)
        assert m.get_dr() == dr
        assert m.max_payload() == n
    with pytest.raises(ValueError, match="DR5"):
        m.set_dr(5)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(
    ("dr", "msg_id", "seq", "fragments", "size"),
    [(0, 17, 1, 74, 11), (3, 200, 2, 3, 242)],
    ids=["74-fragments-at-us915-dr0", "3-fragments-at-us915-dr3"],
)
def test_full_record_is_fragmented_to_n_of_the_dr(rig_factory, module, dr, msg_id, seq, fragments, size):
    rig = rig_factory(module, "US915")
    rig.modem.join()
    rig.modem.set_dr(dr)
    record = wire.encode_record(bench.make_record(42, seq))
    assert len(record) == 658
    sent = bench.send_record(rig.modem, msg_id, record)
    assert (sent.fragments, sent.size, sent.dr, sent.restarts) == (fragments, size, dr, 0)
    frames = rig.model.tx_log
    assert len(frames) == fragments
    assert [f.fcnt for f in frames] == list(range(fragments))
    assert {(f.fport, f.dr, f.region) for f in frames} == {(16, dr, "US915")}
    assert all(len(f.payload) <= size for f in frames)
    assert [len(f.payload) for f in frames] == wire.fragment_lengths(658, size)
    assert sent_record(rig, msg_id) == record


@pytest.mark.parametrize("module", MODULES)
def test_payload_above_n_is_refused_with_the_current_n(rig_factory, module):
    rig = rig_factory(module, "US915")
    rig.modem.join()
    rig.modem.set_dr(0)
    with pytest.raises(PayloadTooLong) as e:
        rig.modem.send(16, bytes(12))
    assert (e.value.max_payload, e.value.dr) == (11, 0)
    assert rig.model.tx_log == []


@pytest.mark.parametrize("module", MODULES)
def test_downlink_in_rx_window_is_returned(rig_factory, module):
    rig = rig_factory(module, "EU868", duty_cycle=False)
    rig.modem.join()
    rig.model.queue_downlink(7, b"\xca\xfe")
    res = rig.modem.send(16, b"\x01\x00\x01\xaa")
    assert res.downlink is not None
    assert (res.downlink.port, res.downlink.payload) == (7, b"\xca\xfe")
    assert [(d.port, d.payload) for d in rig.modem.downlinks()] == [(7, b"\xca\xfe")]


@pytest.mark.parametrize(
    ("module", "line"),
    [("rn2483", b"mac_rx 3 BEEF\r\n"), ("rak3172", b"+EVT:RX_1:-70:5:UNICAST:3:BEEF\r\n")],
)
def test_unsolicited_downlink_between_commands_is_kept(rig_factory, until, module, line):
    rig = rig_factory(module, "EU868")
    rig.modem.probe()
    rig.emu.write_now(line)
    got = []

    def arrived():
        rig.modem.get_dr()  # each command flushes stale input first
        got.extend(rig.modem.downlinks())
        return got

    until(arrived, 5, "the unsolicited downlink")
    assert [(d.port, d.payload) for d in got] == [(3, b"\xbe\xef")]


@pytest.mark.parametrize("module", MODULES)
def test_send_before_join_joins_once(rig_factory, module):
    rig = rig_factory(module, "US915")
    res = rig.modem.send(16, b"\x01\x00\x01\xaa")
    assert res.rejoins == 1
    assert len(rig.model.tx_log) == 1


def test_confirmed_uplink_is_acknowledged(rig_factory):
    rig = rig_factory("rak3172", "US915")
    rig.modem.join()
    res = rig.modem.send(16, b"\x01\x00\x01\xaa", confirmed=True)
    assert res.acked is True
    assert rig.model.tx_log[0].confirmed


def test_pyserial_urls_work_too(tmp_path):
    """``spy://`` (a hex dump of the traffic) wraps the same tty; URLs are not locked."""
    from hil.drivers.rn2483 import RN2483
    from hil.emulator import EmulatorConfig, start_emulator

    emu = start_emulator("rn2483", EmulatorConfig(region="EU868", speed=0))
    try:
        with RN2483(f"spy://{emu.path}?file={tmp_path / 'spy.txt'}") as m:
            assert m.probe().model == "RN2483"
    finally:
        emu.stop()
    dump = (tmp_path / "spy.txt").read_text()
    assert "sys get ver" in dump and " RX " in dump


@pytest.mark.parametrize("module", MODULES)
def test_sub_band_option_moves_every_uplink_to_its_channels(rig_factory, module):
    """A module fresh from the factory hops over all 64 US915 channels; after
    set_sub_band(2) every uplink goes out on channels 8-15 (903.9-905.3 MHz)."""
    from hil.emulator.channels import sub_band_frequencies

    rig = rig_factory(module, "US915", sub_band=None, dr=3)
    rig.modem.set_sub_band(2)
    rig.modem.join()
    for _ in range(10):
        rig.modem.send(16, b"\x01\x00\x01\xaa")
    freqs = {f.frequency_hz for f in rig.model.tx_log}
    assert freqs == sub_band_frequencies(2) - {904_600_000}
    with pytest.raises(ValueError, match="US915"):
        rig_factory(module, "EU868").modem.set_sub_band(2)


@pytest.mark.parametrize("module", MODULES)
def test_downlinks_surface_from_both_drivers(rig_factory, module):
    """``mac_rx <port> <hex>`` / ``+EVT:RX_1:...:<port>:<hex>``: the downlink comes back
    with the send that opened its RX window, and the module's counters see it."""
    rig = rig_factory(module, "US915", dr=3)
    rig.modem.join()
    assert rig.modem.send(17, b"\x07\xff\x04\x06").downlinks == ()
    rig.model.queue_downlink(17, b"\x02\x07\x01", replace=True)
    rig.model.queue_downlink(17, b"\x01\x07", replace=True)  # the newest replaces the one waiting
    res = rig.modem.send(17, b"\x07\xff\x04\x06")
    assert [(d.port, d.payload) for d in res.downlinks] == [(17, b"\x01\x07")]
    assert rig.modem.downlinks() == list(res.downlinks)
