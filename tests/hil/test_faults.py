"""Every injected fault ends in recovery or a clear error within its deadline
(pytest-timeout turns a hang into a failure)."""

from __future__ import annotations

import pytest

from collector.core import wire
from hil import bench
from hil.drivers.modem import ChannelBusy, JoinDenied, ModemRejected, ModemTimeout, RecoveryPolicy

MODULES = ["rn2483", "rak3172"]
FRAME = b"\x05\x00\x01\xaa"

pytestmark = [pytest.mark.timeout(30), pytest.mark.usefixtures("emulator_only")]


def joined(rig_factory, module, region="US915", **kw):
    rig = rig_factory(module, region, **kw)
    rig.modem.join()
    return rig


@pytest.mark.parametrize("module", MODULES)
def test_missing_second_reply_resets_rejoins_and_resends(rig_factory, module):
    rig = joined(rig_factory, module)
    rig.faults.inject("drop_second_reply")
    res = rig.modem.send(16, FRAME)
    assert (res.resets, res.attempts) == (1, 2)
    assert [f.payload for f in rig.model.tx_log] == [FRAME]
    reset_cmd = "sys reset" if module == "rn2483" else "ATZ"
    assert reset_cmd in rig.emu.commands


@pytest.mark.parametrize("module", MODULES)
def test_module_that_keeps_hanging_gives_a_clear_error(rig_factory, module):
    rig = joined(rig_factory, module)
    rig.faults.inject("drop_second_reply", 5)
    with pytest.raises(ModemTimeout, match="no second reply.*after 1 reset"):
        rig.modem.send(16, FRAME)
    assert rig.model.tx_log == []


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("fault", ["busy", "no_free_ch"])
def test_busy_is_retried_with_a_bound(rig_factory, module, fault):
    rig = joined(rig_factory, module)
    rig.faults.inject(fault, 2)
    res = rig.modem.send(16, FRAME)
    assert res.attempts == 3
    assert len(rig.model.tx_log) == 1
    rig.faults.inject(fault, 10)
    with pytest.raises(ChannelBusy, match="after 3 retries"):
        rig.modem.send(16, FRAME)
    assert len(rig.model.tx_log) == 1


@pytest.mark.parametrize("module", MODULES)
def test_real_duty_cycle_is_waited_out(rig_factory, module):
    """EU868 at 1 %: back-to-back frames meet a closed band and are retried."""
    policy = RecoveryPolicy(busy_retries=20, first_delay_s=0.01, factor=1.5, max_delay_s=0.05)
    rig = rig_factory(module, "EU868", duty_cycle=True, duty_scale=0.002, policy=policy)
    rig.modem.join()
    rig.modem.set_dr(5)
    results = [rig.modem.send(16, bytes([9, i, 0xAA])) for i in range(1, 4)]
    assert len(rig.model.tx_log) == 3
    assert sum(r.attempts for r in results) > 3  # some were refused and retried


@pytest.mark.parametrize("module", MODULES)
def test_dr_lowered_mid_message_refragments(rig_factory, module):
    rig = joined(rig_factory, module)
    rig.modem.set_dr(3)
    record = wire.encode_record(bench.make_record(7, 3))
    rig.faults.inject("lower_dr")  # as an ADR command after the first uplink would
    sent = bench.send_record(rig.modem, 40, record)
    assert sent.restarts == 1
    assert (sent.msg_id, sent.dr, sent.size) == (41, 2, 125)
    frames = [f.payload for f in rig.model.tx_log]
    assert frames[0][:3] == bytes((40, 0, 3))  # the cut message at S=242
    again = [p for p in frames if p[0] == 41]
    assert wire.defragment(again) == (41, record)
    assert all(len(p) <= 125 for p in again)


@pytest.mark.parametrize("module", MODULES)
def test_garbage_and_partial_lines_are_ignored(rig_factory, module):
    rig = rig_factory(module, "US915")
    rig.faults.inject("garbage", 10)
    rig.faults.inject("split_writes")
    info = rig.modem.probe()
    assert info.region == "US915"
    rig.modem.join()
    rig.modem.send(16, FRAME)
    assert len(rig.model.tx_log) == 1
    assert "ma" in rig.modem.link.ignored and "k" in rig.modem.link.ignored


@pytest.mark.parametrize("module", MODULES)
def test_reboot_mid_message_rejoins_and_resends(rig_factory, module):
    rig = joined(rig_factory, module)
    rig.modem.set_dr(3)
    record = wire.encode_record(bench.make_record(7, 4))
    rig.faults.inject("reboot")
    sent = bench.send_record(rig.modem, 90, record)
    assert sent.status == "sent"
    assert wire.defragment(f.payload for f in rig.model.tx_log) == (90, record)
    assert rig.modem.get_dr() == 3  # the DR the driver set is restored after the reboot


@pytest.mark.parametrize("module", MODULES)
def test_denied_join_is_a_clear_error(rig_factory, module):
    rig = rig_factory(module, "US915")
    rig.faults.inject("deny_join", 5)
    with pytest.raises(JoinDenied, match="denied"):
        rig.modem.join()


@pytest.mark.parametrize("module", MODULES)
def test_one_denied_join_is_retried(rig_factory, module):
    rig = rig_factory(module, "US915")
    rig.faults.inject("deny_join")
    rig.modem.join()
    rig.modem.send(16, FRAME)
    assert len(rig.model.tx_log) == 1


def test_frame_counter_error_rejoins(rig_factory):
    rig = joined(rig_factory, "rn2483")
    rig.faults.inject("fcnt_err")
    res = rig.modem.send(16, FRAME)
    assert res.rejoins == 1
    assert rig.emu.commands.count("mac join otaa") == 2
    rig.faults.inject("fcnt_err", 3)
    with pytest.raises(ModemRejected, match="needs a join"):
        rig.modem.send(16, FRAME)


def test_mac_tx_ok_is_never_taken_for_ok(rig_factory):
    """A stray ``mac_tx_ok`` before the reply to ``mac set appkey`` must not pass for
    ``ok``: the real reply ``invalid_param`` is what counts."""
    from hil.drivers.modem import Credentials

    rig = rig_factory("rn2483", "US915")
    rig.modem.credentials = Credentials(app_key="ZZ" * 16)
    rig.faults.inject("stray_tx_ok")
    with pytest.raises(ModemRejected) as e:
        rig.modem.join()
    assert e.value.reply == "invalid_param"
    assert "mac_tx_ok" in rig.modem.link.ignored


@pytest.mark.parametrize("module", MODULES)
def test_unacknowledged_confirmed_uplink_is_a_clear_error(rig_factory, module):
    from hil.drivers.modem import NotAcknowledged

    rig = joined(rig_factory, module)
    rig.faults.inject("nack")
    with pytest.raises(NotAcknowledged, match="not acknowledged"):
        rig.modem.send(16, FRAME, confirmed=True)
    assert rig.modem.send(16, FRAME, confirmed=True).acked is True
